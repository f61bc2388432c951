package images

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"net/url"
	"path"
	"strings"
)

// maxChecksumsFile bounds a checksums file: real ones list a few dozen
// files; anything far larger is the wrong URL, not worth holding in memory.
const maxChecksumsFile = 1 << 20

// lookupChecksum fetches a SHA256SUMS file and returns the digest it lists
// for the base name of image's path.
func (p *Puller) lookupChecksum(ctx context.Context, rawSums string, image *url.URL) (string, error) {
	sums, err := parseImageURL(rawSums)
	if err != nil {
		return "", fmt.Errorf("checksums: %w", err)
	}
	name := path.Base(image.Path)
	if name == "/" || name == "." {
		return "", fmt.Errorf("%w: %s has no file name to look up in %s", ErrChecksumNotListed, RedactURL(image.String()), RedactURL(sums.String()))
	}
	body, err := p.fetchSmall(ctx, sums, maxChecksumsFile)
	if err != nil {
		return "", fmt.Errorf("checksums %s: %w", RedactURL(sums.String()), err)
	}
	digest, ok := findChecksum(body, name)
	if !ok {
		return "", fmt.Errorf("%w: %s lists no sha256 for %q", ErrChecksumNotListed, RedactURL(sums.String()), name)
	}
	return digest, nil
}

// findChecksum looks name up in the output of sha256sum ("HEX  name" in
// text mode, "HEX *name" in binary mode) or of BSD-style tools
// ("SHA256 (name) = HEX", as Fedora publishes). Lines with another hash
// length, comments and signatures around the list are skipped.
func findChecksum(sums []byte, name string) (string, bool) {
	sc := bufio.NewScanner(bytes.NewReader(sums))
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		var digest, file string
		if rest, ok := strings.CutPrefix(line, "SHA256 ("); ok {
			f, d, found := strings.Cut(rest, ") = ")
			if !found {
				continue
			}
			digest, file = d, f
		} else {
			d, rest, found := strings.Cut(line, " ")
			if !found {
				continue
			}
			// The character after the separator is the mode: ' ' or '*'.
			if strings.HasPrefix(rest, " ") || strings.HasPrefix(rest, "*") {
				rest = rest[1:]
			}
			digest, file = d, rest
		}
		if strings.TrimPrefix(file, "./") != name {
			continue
		}
		if d, err := normaliseDigest(digest); err == nil {
			return d, true
		}
	}
	return "", false
}
