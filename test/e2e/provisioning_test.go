package e2e

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/labvm/labvm/daemon/api"
)

// TestProvisioning: Running means provisioned. An instance of an image
// with cloud-init (the test image's mini cloud-init) is Running only once
// cloud-init has finished this boot (its result.json), at every boot; a
// boot whose runcmd fails ends SetupFailed with cloud-init's error, which
// labvm logs --cloud-init shows too.
func TestProvisioning(t *testing.T) {
	image := requireHost(t)
	d := startDaemon(t)
	d.must("image", "import", "tiny", image)

	t.Log("a good instance is Running only after this boot's result.json exists")
	d.must("create", "alice-dev", "--image", "tiny", "--size", "Standard_B1s")
	d.checkProvisioned("alice-dev", api.OpCreate)
	if got := d.must("logs", "alice-dev", "--cloud-init"); !strings.Contains(got, "running 'modules-final'") {
		t.Fatalf("logs --cloud-init:\n%s", got)
	}
	if got := d.must("show", "alice-dev"); !strings.Contains(got, "cloud-init done") {
		t.Fatalf("show does not say provisioning is done:\n%s", got)
	}

	t.Log("a restart waits for cloud-init again: result.json is per boot")
	d.must("restart", "alice-dev")
	d.checkProvisioned("alice-dev", api.OpRestart)

	t.Log("a failing setup fails runcmd: SetupFailed with cloud-init's error")
	failing := filepath.Join(t.TempDir(), "fail.sh")
	if err := os.WriteFile(failing, []byte("echo about to fail\nexit 3\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	const ciErr = "('scripts_user', RuntimeError('Runparts: 1 failures (runcmd) in 1 attempted commands'))"
	d.mustFail("cloud-init finished with errors", "create", "bob-dev", "--image", "tiny", "--size", "Standard_B1s", "--setup-script", failing)
	bob := d.showInstance("bob-dev")
	if bob.State != "SetupFailed" || !strings.Contains(bob.StateReason, "exited with 3") || !strings.Contains(bob.StateReason, ciErr) {
		t.Fatalf("failed boot: %s %q", bob.State, bob.StateReason)
	}
	if p := bob.Provisioning; p == nil || p.Status != api.ProvisioningFailed || len(p.Errors) != 1 || p.Errors[0] != ciErr {
		t.Fatalf("provisioning of the failed boot: %+v", p)
	}
	logs := d.must("logs", "bob-dev", "--cloud-init")
	for _, want := range []string{"labvm: the setup script failed (exit 3)", "Failed to run module scripts_user"} {
		if !strings.Contains(logs, want) {
			t.Fatalf("logs --cloud-init lacks %q:\n%s", want, logs)
		}
	}
	if got := d.must("show", "bob-dev"); !strings.Contains(got, "cloud-init failed: "+ciErr) {
		t.Fatalf("show does not give cloud-init's error:\n%s", got)
	}
	d.mustFail("give one of", "logs", "bob-dev", "--cloud-init", "--setup")
}

// checkProvisioned checks that name is Running with cloud-init done, and
// that its last op of kind waited for the agent, then for cloud-init,
// and saw cloud-init finish no earlier than the guest wrote result.json.
func (d *labvmd) checkProvisioned(name string, kind api.OperationKind) {
	t := d.t
	t.Helper()
	inst := d.showInstance(name)
	if inst.State != "Running" || inst.Provisioning == nil || inst.Provisioning.Status != api.ProvisioningDone || len(inst.Provisioning.Errors) != 0 {
		t.Fatalf("%s: state %s, provisioning %+v; want Running, done", name, inst.State, inst.Provisioning)
	}
	var result struct {
		V1 struct {
			Errors []string `json:"errors"`
		} `json:"v1"`
	}
	raw := d.must("exec", name, "--", "cat", "/run/cloud-init/result.json")
	if err := json.Unmarshal([]byte(raw), &result); err != nil || len(result.V1.Errors) != 0 {
		t.Fatalf("%s: result.json %q (%v)", name, raw, err)
	}
	mtime, err := strconv.ParseInt(strings.TrimSpace(d.must("exec", name, "--", "stat", "-L", "-c", "%Y", "/run/cloud-init/result.json")), 10, 64)
	if err != nil {
		t.Fatal(err)
	}

	var ops []api.Operation
	d.jsonOut(&ops, "operations")
	var op *api.Operation
	for i := range ops {
		if ops[i].Target == name && ops[i].Kind == kind && (op == nil || ops[i].CreatedAt.After(op.CreatedAt)) {
			op = &ops[i]
		}
	}
	if op == nil {
		t.Fatalf("no %s operation of %s in %+v", kind, name, ops)
	}
	var steps []string
	var ci *api.Stage
	for i, st := range op.Stages {
		steps = append(steps, st.Step)
		if st.Step == "cloud-init" {
			ci = &op.Stages[i]
		}
	}
	order := strings.Join(steps, ",")
	if !strings.Contains(order, "wait-guest,cloud-init") {
		t.Fatalf("%s %s: steps %s; want wait-guest then cloud-init", kind, name, order)
	}
	if ci.DoneAt == nil || ci.Detail != "cloud-init: finished" {
		t.Fatalf("%s %s: cloud-init step %+v", kind, name, *ci)
	}
	// The guest's clock comes from the host's at boot, to the second.
	if written := time.Unix(mtime, 0); written.After(ci.DoneAt.Add(2 * time.Second)) {
		t.Fatalf("%s %s: cloud-init step done at %s, before the guest wrote result.json at %s", kind, name, ci.DoneAt, written)
	}
}
