// Package shell quotes words for the POSIX shells of guests (dash, busybox
// ash) and of the host: job command lines, cloud-init runcmd entries and
// the ssh ProxyCommand are all built with it. It imports nothing of
// labvm's and no libvirt, so the CLI and storage can use it too.
package shell

import "strings"

// Quote quotes s as one word for a POSIX shell. Words made only of
// characters no shell treats specially stay as they are; anything else is
// put in single quotes, inside which the shell interprets nothing, and
// each single quote inside is written as quote, backslash, quote, quote:
// close, escaped quote, reopen.
func Quote(s string) string {
	if s != "" && strings.IndexFunc(s, needsQuote) < 0 {
		return s
	}
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}

func needsQuote(r rune) bool {
	switch {
	case r >= 'a' && r <= 'z', r >= 'A' && r <= 'Z', r >= '0' && r <= '9':
		return false
	}
	return !strings.ContainsRune("-_./:,+@%=", r)
}

// Join quotes every word of argv and joins them with spaces: the
// command line a shell would run as exactly argv.
func Join(argv ...string) string {
	words := make([]string, len(argv))
	for i, w := range argv {
		words[i] = Quote(w)
	}
	return strings.Join(words, " ")
}
