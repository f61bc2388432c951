package storage

import (
	"fmt"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/labvm/labvm/test/hostreq"
)

// cloudInitSchema is cloud-init's own schema of cloud-config, as Debian
// 12's cloud-init 22.4 ships it (testdata/README says where from).
const cloudInitSchema = "testdata/cloud-init-22.4-schema-cloud-config-v1.json"

// TestUserDataMeetsCloudInitSchema validates every shape of user-data
// labvm writes against cloud-init's schema, as cloud-init does at boot: a
// seed that breaks it works, but the guest logs "Invalid cloud-config
// provided" at every boot and newer cloud-init reports the boot degraded.
// (`ssh_genkeytypes: []` once did: the schema wants at least one type.)
func TestUserDataMeetsCloudInitSchema(t *testing.T) {
	python := "/usr/bin/python3"
	if _, err := os.Stat(python); err != nil {
		python = hostreq.RequireTool(t, "python3", "python3")
	}
	err := exec.Command(python, "-c", "import jsonschema, yaml").Run()
	hostreq.Require(t, err == nil, fmt.Sprintf("python3 jsonschema and PyYAML (apt-get install python3-jsonschema python3-yaml): %v", err))

	withKey := testSpec()
	withKey.HostKey = &testHostKey
	noUser := withKey
	noUser.User, noUser.SSHAuthorizedKeys = "", nil
	everything := withKey
	everything.Datasets = []string{"imagenet", "census-2020"}
	everything.Scripts = Scripts{Setup: []byte("#!/bin/sh\necho setup\n"), Startup: []byte("#!/bin/sh\necho start\n"),
		Timeout: 10 * time.Minute, DoneURL: "http://10.177.0.1:8080/script-done/i-0123abcd"}
	plain := testSpec()
	plain.PhoneHomeURL = ""
	for _, tc := range []struct {
		name string
		spec SeedSpec
	}{
		{"user, key, phone home", testSpec()},
		{"no phone home", plain},
		{"host key", withKey},
		{"host key without a user", noUser},
		{"datasets and scripts", everything},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ud, err := UserData(tc.spec)
			if err != nil {
				t.Fatal(err)
			}
			cmd := exec.Command(python, "-c", `import json, sys, yaml, jsonschema
schema = json.load(open(sys.argv[1]))
errs = sorted(jsonschema.Draft4Validator(schema).iter_errors(yaml.safe_load(sys.stdin)), key=str)
for e in errs:
    print("/".join(str(p) for p in e.absolute_path) or "(top)", ":", e.message)
sys.exit(1 if errs else 0)`, cloudInitSchema)
			cmd.Stdin = strings.NewReader(string(ud))
			if out, err := cmd.CombinedOutput(); err != nil {
				t.Fatalf("user-data breaks cloud-init's schema (%v):\n%s\nuser-data:\n%s", err, out, ud)
			}
		})
	}

	// The check itself catches what it is for.
	t.Run("an empty ssh_genkeytypes is refused", func(t *testing.T) {
		cmd := exec.Command(python, "-c", `import json, sys, jsonschema
schema = json.load(open(sys.argv[1]))
sys.exit(0 if list(jsonschema.Draft4Validator(schema).iter_errors({"ssh_genkeytypes": []})) else 1)`, cloudInitSchema)
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("the schema accepted ssh_genkeytypes: [] (%v): %s", err, out)
		}
	})
}
