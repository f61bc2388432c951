package main

import (
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"
)

func TestBrowserArgs(t *testing.T) {
	const url = "http://127.0.0.1:8000/tree"
	for _, tc := range []struct {
		spec string
		want []string
	}{
		{"firefox", []string{"firefox", url}},
		{"chromium --new-window", []string{"chromium", "--new-window", url}},
		{"lynx -dump %s", []string{"lynx", "-dump", url}},
		{"open-it --url=%s --twice=%s", []string{"open-it", "--url=" + url, "--twice=" + url}},
	} {
		if got := browserArgs(tc.spec, url); !reflect.DeepEqual(got, tc.want) {
			t.Errorf("browserArgs(%q) = %q, want %q", tc.spec, got, tc.want)
		}
	}
}

// recorder writes a script that records its arguments in a file and
// returns both paths.
func recorder(t *testing.T, dir, name string) (script, record string) {
	t.Helper()
	script, record = filepath.Join(dir, name), filepath.Join(dir, name+".args")
	body := "#!/bin/sh\nprintf '%s\\n' \"$@\" > " + record + ".tmp && /bin/mv " + record + ".tmp " + record + "\n"
	if err := os.WriteFile(script, []byte(body), 0o755); err != nil {
		t.Fatal(err)
	}
	return script, record
}

func waitRecord(t *testing.T, record string) []string {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		if b, err := os.ReadFile(record); err == nil {
			return strings.Fields(string(b))
		}
	}
	t.Fatalf("%s was never written: the browser did not run", record)
	return nil
}

func TestOpenBrowser(t *testing.T) {
	const url = "http://127.0.0.1:8000/"
	dir := t.TempDir()
	mine, mineRec := recorder(t, dir, "my-browser")
	_, xdgRec := recorder(t, dir, "xdg-open")
	envOf := func(browser string) func(string) string {
		return func(k string) string {
			if k == "BROWSER" {
				return browser
			}
			return ""
		}
	}

	t.Run("$BROWSER's first command that starts, with %s", func(t *testing.T) {
		t.Setenv("PATH", dir)
		name, err := openBrowser(url, envOf(filepath.Join(dir, "missing")+":"+mine+" --flag %s"))
		if err != nil || name != mine {
			t.Fatalf("openBrowser = %q, %v; want %s", name, err, mine)
		}
		if got := waitRecord(t, mineRec); !reflect.DeepEqual(got, []string{"--flag", url}) {
			t.Fatalf("the browser got %q", got)
		}
	})
	t.Run("xdg-open when $BROWSER is unset", func(t *testing.T) {
		t.Setenv("PATH", dir)
		name, err := openBrowser(url, envOf(""))
		if err != nil || name != "xdg-open" {
			t.Fatalf("openBrowser = %q, %v; want xdg-open", name, err)
		}
		if got := waitRecord(t, xdgRec); !reflect.DeepEqual(got, []string{url}) {
			t.Fatalf("xdg-open got %q", got)
		}
	})
	t.Run("none: an error that says what was tried", func(t *testing.T) {
		t.Setenv("PATH", t.TempDir())
		if _, err := openBrowser(url, envOf("")); err == nil || !strings.Contains(err.Error(), "no browser found") {
			t.Fatalf("openBrowser with nothing installed: %v", err)
		}
		if _, err := openBrowser(url, envOf("/nonexistent/firefox")); err == nil || !strings.Contains(err.Error(), `$BROWSER "/nonexistent/firefox"`) {
			t.Fatalf("openBrowser with a missing $BROWSER: %v", err)
		}
	})
}
