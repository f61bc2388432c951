package e2e

import (
	"bytes"
	"encoding/json"
	"strings"
	"sync"
	"testing"

	"github.com/labvm/labvm/daemon/api"
)

type bytesBuffer = bytes.Buffer

// TestWhoMayDoWhat tells the governance story with real Unix users, each
// running the real labvm against one daemon: readers read, contributors
// manage any instance but use only their own, owners create on behalf of
// others, quota holds through stops, and the audit log saw it all.
func TestWhoMayDoWhat(t *testing.T) {
	image := requireHost(t)
	binariesReadableByAll(t)
	p := "lvt" + randHex(3)
	sock, datasci := p+"sock", p+"ds"
	testGroup(t, sock)
	testGroup(t, datasci)
	alice := testUser(t, p+"-alice", sock)
	carol := testUser(t, p+"-carol", sock)
	bob := testUser(t, p+"-bob", sock)
	rita := testUser(t, p+"-rita", sock)
	olivia := testUser(t, p+"-olivia", sock)
	gina := testUser(t, p+"-gina", sock, datasci)
	nobody := testUser(t, p+"-nobody", sock)

	d := startDaemon(t, "--socket-group", sock)
	d.must("image", "import", "tiny", image)

	expectDenied := func(t *testing.T, r result, mention string) {
		t.Helper()
		if r.code == 0 || !strings.Contains(r.stderr, "Error: ") || !strings.Contains(r.stderr, mention) {
			t.Fatalf("want a denial mentioning %q, got exit %d:\n%s%s", mention, r.code, r.stdout, r.stderr)
		}
	}
	expectOK := func(t *testing.T, r result) string {
		t.Helper()
		if r.code != 0 {
			t.Fatalf("exit %d:\n%s%s", r.code, r.stdout, r.stderr)
		}
		return r.stdout
	}

	d.chapter(t, "a caller with no role is refused, and told which action is missing", func(t *testing.T) {
		expectDenied(t, d.as(nobody, "list"), "computes/read")
		if w := expectOK(t, d.as(nobody, "whoami")); !strings.Contains(w, "none") {
			t.Fatalf("whoami of a user without role:\n%s", w)
		}
	})

	// Every later chapter needs these roles.
	d.must("role", "assign", alice.name, "contributor")
	d.must("role", "assign", carol.name, "contributor")
	d.must("role", "assign", rita.name, "reader")
	d.must("role", "assign", olivia.name, "owner")
	d.must("role", "assign", "@"+datasci, "contributor")

	d.chapter(t, "only owners manage roles; bad principals and roles change nothing", func(t *testing.T) {
		expectDenied(t, d.as(alice, "role", "assign", alice.name, "owner"), "roles/write")
		d.mustFail("no Unix user", "role", "assign", p+"-ghost", "reader")
		d.mustFail("no Unix group", "role", "assign", "@"+p+"-nogroup", "reader")
		d.mustFail("unknown role", "role", "assign", alice.name, "emperor")
		d.mustFail("last owner", "role", "remove", olivia.name, "owner")
		var w api.WhoAmI
		if err := json.Unmarshal([]byte(expectOK(t, d.as(gina, "whoami", "-o", "json"))), &w); err != nil || w.Role != "contributor" {
			t.Fatalf("gina's role through @%s: %+v %v", datasci, w, err)
		}
	})

	d.chapter(t, "a reader can list but not create", func(t *testing.T) {
		expectOK(t, d.as(rita, "list"))
		expectDenied(t, d.as(rita, "create", "rita-dev", "--image", "tiny", "--size", "Standard_B1s"), "computes/write")
	})

	t.Log("Alice, a contributor, creates her instance")
	expectOK(t, d.as(alice, "create", "alice-dev", "--image", "tiny", "--size", "Standard_B1s"))

	d.chapter(t, "Carol, another contributor, may stop Alice's instance but not exec into it", func(t *testing.T) {
		expectDenied(t, d.as(carol, "exec", "alice-dev", "--", "hostname"), "only "+alice.name)
		expectOK(t, d.as(carol, "stop", "alice-dev"))
		expectOK(t, d.as(alice, "start", "alice-dev"))
		expectOK(t, d.as(alice, "exec", "alice-dev", "--", "hostname"))
	})

	d.chapter(t, "a contributor may not create on behalf of others; an owner may", func(t *testing.T) {
		expectDenied(t, d.as(alice, "create", "bob-dev", "--image", "tiny", "--size", "Standard_B1s", "--assign-to", bob.name), "owner role")
		d.mustFail("no Unix user", "create", "bob-dev", "--image", "tiny", "--size", "Standard_B1s", "--assign-to", p+"-ghost")
		expectOK(t, d.as(olivia, "create", "bob-dev", "--image", "tiny", "--size", "Standard_B1s", "--assign-to", bob.name))
		var inst api.Instance
		if err := json.Unmarshal([]byte(d.must("show", "bob-dev", "-o", "json")), &inst); err != nil {
			t.Fatal(err)
		}
		if inst.Creator != olivia.name || inst.AssignedTo != bob.name || inst.Owner != bob.name {
			t.Fatalf("bob-dev creator/assigned/owner = %s/%s/%s", inst.Creator, inst.AssignedTo, inst.Owner)
		}
	})

	d.chapter(t, "only Bob uses bob-dev: not its creator, not root", func(t *testing.T) {
		if got := strings.TrimSpace(expectOK(t, d.as(bob, "exec", "bob-dev", "--", "cat", "/etc/hostname"))); got != "bob-dev" {
			t.Fatalf("bob's exec: %q", got)
		}
		expectDenied(t, d.as(olivia, "exec", "bob-dev", "--", "hostname"), bob.name+"'s instance")
		d.mustFail(bob.name+"'s instance", "exec", "bob-dev", "--", "hostname")
	})

	d.chapter(t, "list filters by owner", func(t *testing.T) {
		var mine []api.Instance
		if err := json.Unmarshal([]byte(expectOK(t, d.as(bob, "list", "--mine", "-o", "json"))), &mine); err != nil {
			t.Fatal(err)
		}
		if len(mine) != 1 || mine[0].Name != "bob-dev" {
			t.Fatalf("bob's list --mine: %+v", mine)
		}
		var byOwner []api.Instance
		d.jsonOut(&byOwner, "list", "--owner", alice.name)
		if len(byOwner) != 1 || byOwner[0].Name != "alice-dev" {
			t.Fatalf("list --owner alice: %+v", byOwner)
		}
	})

	d.chapter(t, "sizes never change", func(t *testing.T) {
		d.mustFail("create a new instance", "resize", "alice-dev", "--size", "Standard_B2s")
	})

	d.chapter(t, "quota: a family limit refuses the create that would exceed it; stop frees nothing; delete does", func(t *testing.T) {
		d.mustFail("below the 2 cores already used", "quota", "set", "--family", "standardBSFamily", "1")
		d.must("quota", "set", "--family", "standardBSFamily", "2")
		expectDenied(t, d.as(carol, "create", "carol-dev", "--image", "tiny", "--size", "Standard_B1s"), "quota of family standardBSFamily exceeded")
		expectOK(t, d.as(alice, "stop", "alice-dev"))
		expectDenied(t, d.as(carol, "create", "carol-dev", "--image", "tiny", "--size", "Standard_B1s"), "quota")
		expectOK(t, d.as(alice, "delete", "alice-dev", "--yes"))
	})

	d.chapter(t, "two concurrent creates with room for one: exactly one succeeds", func(t *testing.T) {
		var wg sync.WaitGroup
		results := make([]result, 2)
		for i, who := range []unixUser{carol, gina} {
			wg.Add(1)
			go func(i int, who unixUser) {
				defer wg.Done()
				results[i] = d.as(who, "create", who.name[len(p)+1:]+"-dev", "--image", "tiny", "--size", "Standard_B1s", "--no-wait")
			}(i, who)
		}
		wg.Wait()
		won := 0
		for _, r := range results {
			if r.code == 0 {
				won++
				d.must("wait", strings.TrimSpace(r.stdout))
			} else if !strings.Contains(r.stderr, "quota") {
				t.Fatalf("loser failed for another reason:\n%s", r.stderr)
			}
		}
		if won != 1 {
			t.Fatalf("%d of 2 concurrent creates succeeded with room for one", won)
		}
	})

	d.chapter(t, "the audit log shows who did what, with the outcome", func(t *testing.T) {
		var audit []api.AuditEntry
		d.jsonOut(&audit, "audit")
		// A refused call is recorded before its body is read, so it names
		// only what its path names (nothing, for these two).
		want := []struct{ caller, action, target, outcome string }{
			{alice.name, "roles/write", "", "denied"},
			{rita.name, "computes/write", "", "denied"},
			{alice.name, "computes/write", "alice-dev", "succeeded"},
			{carol.name, "computes/stop/action", "alice-dev", "succeeded"},
			{carol.name, "computes/applicationaccess/action:exec", "alice-dev", "denied"},
			{olivia.name, "computes/write", "bob-dev", "succeeded"},
			{bob.name, "computes/applicationaccess/action:exec", "bob-dev", "succeeded"},
			{"root", "computes/applicationaccess/action:exec", "bob-dev", "denied"},
			{carol.name, "computes/write", "carol-dev", "failed"},
			{alice.name, "computes/delete", "alice-dev", "succeeded"},
		}
		for _, w := range want {
			found := false
			for _, e := range audit {
				if e.Caller == w.caller && e.Action == w.action && e.Target == w.target && e.Outcome == w.outcome {
					found = true
					break
				}
			}
			if !found {
				t.Errorf("audit lacks %+v", w)
			}
		}
		if t.Failed() {
			for _, e := range audit {
				t.Logf("audit: %+v", e)
			}
		}
		expectDenied(t, d.as(alice, "audit"), "lacks audit/read")
	})

}
