package main

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strings"
)

// fallbackBrowsers are tried, in order, when $BROWSER names none that
// starts: the freedesktop opener, then Debian's alternatives (the user's
// choice of sensible-browser, the system's x-www-browser for a desktop and
// www-browser for a terminal).
var fallbackBrowsers = []string{"xdg-open", "sensible-browser", "x-www-browser", "www-browser"}

// openBrowser starts a browser on url and returns without waiting for it:
// the first of $BROWSER's colon-separated commands that starts (the
// convention Python's webbrowser, git and man follow: %s in a command
// stands for the URL, else the URL is its last argument), or else the
// first fallback found on PATH. It says which one it started. A browser
// that exits later is reaped in the background; one that outlives labvm
// is left to run.
func openBrowser(url string, env func(string) string) (string, error) {
	var tried []string
	for _, spec := range strings.Split(env("BROWSER"), ":") {
		if strings.TrimSpace(spec) == "" {
			continue
		}
		args := browserArgs(spec, url)
		if err := startDetached(args); err != nil {
			tried = append(tried, fmt.Sprintf("$BROWSER %q: %v", spec, err))
			continue
		}
		return args[0], nil
	}
	for _, name := range fallbackBrowsers {
		if _, err := exec.LookPath(name); err != nil {
			continue
		}
		if err := startDetached([]string{name, url}); err != nil {
			tried = append(tried, fmt.Sprintf("%s: %v", name, err))
			continue
		}
		return name, nil
	}
	if len(tried) == 0 {
		return "", errors.New("no browser found: $BROWSER is unset and none of " + strings.Join(fallbackBrowsers, ", ") + " is installed")
	}
	return "", errors.New(strings.Join(tried, "; "))
}

// browserArgs splits one $BROWSER command into words (spaces only, as
// the convention has it) and puts url in place of %s, or last.
func browserArgs(spec, url string) []string {
	words := strings.Fields(spec)
	substituted := false
	for i, w := range words {
		if strings.Contains(w, "%s") {
			words[i] = strings.ReplaceAll(w, "%s", url)
			substituted = true
		}
	}
	if !substituted {
		words = append(words, url)
	}
	return words
}

// startDetached starts a command with no terminal input (a text browser
// must not fight labvm for it) and reaps it when it exits.
func startDetached(args []string) error {
	cmd := exec.Command(args[0], args[1:]...)
	cmd.Stdin = nil
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	if err := cmd.Start(); err != nil {
		return err
	}
	go func() { _ = cmd.Wait() }()
	return nil
}

// announceBrowser opens url for `open --browser` and `studio --browser`
// and tells the user what happened; a browser that cannot start is no
// reason to stop the forward the URL points at.
func (a *app) announceBrowser(url string) {
	name, err := openBrowser(url, os.Getenv)
	if err != nil {
		fmt.Fprintf(a.stderr, "Cannot start a browser (%v); open %s yourself, or set BROWSER\n", err, url)
		return
	}
	fmt.Fprintf(a.stderr, "Opened %s in %s\n", url, name)
}
