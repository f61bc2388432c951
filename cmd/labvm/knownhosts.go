package main

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"syscall"

	"golang.org/x/crypto/ssh"
)

// knownHostsPath is labvm's own known_hosts file, which ssh reads through
// UserKnownHostsFile: $XDG_CONFIG_HOME/labvm/known_hosts, by default
// ~/.config/labvm/known_hosts.
func knownHostsPath() (string, error) {
	dir, err := os.UserConfigDir()
	if err != nil {
		return "", fmt.Errorf("find labvm's known_hosts file: %w", err)
	}
	return filepath.Join(dir, "labvm", "known_hosts"), nil
}

// knownHostsLines are alias's entries: one "ALIAS TYPE BASE64" line per
// key, comments dropped. Every key must parse, so nothing else can end up
// in the file.
func knownHostsLines(alias string, keys []string) ([]string, error) {
	if alias == "" || strings.ContainsAny(alias, " \t\r\n,*?!#@[]") {
		return nil, fmt.Errorf("host key alias %q cannot be written to known_hosts", alias)
	}
	var lines []string
	for i, k := range keys {
		if strings.ContainsAny(k, "\r\n") {
			return nil, fmt.Errorf("host key %d of %s spans several lines", i+1, alias)
		}
		pub, _, _, _, err := ssh.ParseAuthorizedKey([]byte(k))
		if err != nil {
			return nil, fmt.Errorf("host key %d of %s from labvmd: %w", i+1, alias, err)
		}
		lines = append(lines, alias+" "+strings.TrimSpace(string(ssh.MarshalAuthorizedKey(pub))))
	}
	if len(lines) == 0 {
		return nil, fmt.Errorf("no host key for %s", alias)
	}
	return lines, nil
}

// replaceAlias returns old with every line naming alias (alone or in a
// comma-separated host list) dropped and lines appended. Other lines,
// comments included, are kept as they are.
func replaceAlias(old []byte, alias string, lines []string) []byte {
	var b bytes.Buffer
	for _, line := range strings.SplitAfter(string(old), "\n") {
		if line == "" {
			continue
		}
		if !namesHost(line, alias) {
			b.WriteString(line)
			if !strings.HasSuffix(line, "\n") {
				b.WriteByte('\n')
			}
		}
	}
	for _, l := range lines {
		b.WriteString(l + "\n")
	}
	return b.Bytes()
}

// namesHost reports whether a known_hosts line is about host: its host
// field (after an optional @marker) lists host exactly.
func namesHost(line, host string) bool {
	f := strings.Fields(line)
	if len(f) > 0 && strings.HasPrefix(f[0], "@") {
		f = f[1:]
	}
	if len(f) == 0 || strings.HasPrefix(f[0], "#") {
		return false
	}
	for _, h := range strings.Split(f[0], ",") {
		if h == host {
			return true
		}
	}
	return false
}

// writeKnownHosts records keys as alias's only host keys in the
// known_hosts file at path. The file is rewritten atomically (0600, in a
// 0700 directory), under an flock, so concurrent labvm commands neither
// see half a file nor lose each other's entries. An unchanged file is not
// rewritten.
func writeKnownHosts(path, alias string, keys []string) error {
	lines, err := knownHostsLines(alias, keys)
	if err != nil {
		return err
	}
	unlock, err := lockBeside(path)
	if err != nil {
		return err
	}
	defer unlock()
	old, err := os.ReadFile(path)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("read %s: %w", path, err)
	}
	updated := replaceAlias(old, alias, lines)
	if bytes.Equal(updated, old) {
		return nil
	}
	if err := writeFileAtomic(path, bytes.NewReader(updated)); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	return nil
}

// lockBeside creates path's directory (0700) and takes an exclusive
// flock on path+".lock", so labvm commands that rewrite path run one at a
// time; unlock releases it.
func lockBeside(path string) (unlock func(), err error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, fmt.Errorf("create %s: %w", filepath.Dir(path), err)
	}
	lock, err := os.OpenFile(path+".lock", os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("lock %s: %w", path, err)
	}
	if err := syscall.Flock(int(lock.Fd()), syscall.LOCK_EX); err != nil {
		_ = lock.Close()
		return nil, fmt.Errorf("lock %s: %w", path, err)
	}
	return func() { _ = lock.Close() }, nil
}

// writeFileAtomic replaces path with r's content through a 0600 temporary
// file in the same directory.
func writeFileAtomic(path string, r io.Reader) (err error) {
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".tmp-*")
	if err != nil {
		return err
	}
	defer func() {
		if err != nil {
			tmp.Close()
			_ = os.Remove(tmp.Name()) // best effort: err is what the caller needs
		}
	}()
	if _, err := io.Copy(tmp, r); err != nil {
		return err
	}
	if err := tmp.Chmod(0o600); err != nil {
		return err
	}
	if err := tmp.Sync(); err != nil {
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	return os.Rename(tmp.Name(), path)
}
