// Command sourcesonly fails when the repository holds something that is not
// a source: an executable (ELF, Mach-O or PE), a file with NUL bytes (an
// image, an archive, a database), or a file over the size limit. Binaries
// are built by `make build`, test images by `make image`; committing them
// bloats every clone for good and lets a stale build pass for the source.
//
// `make lint` runs it from the repository root on the committed files
// (`git ls-files`). A file that must be binary goes into binaryByDesign
// below, with the reason.
package main

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strings"
)

// maxSize is the largest file allowed. The largest source today is about
// 25 KB; anything near this limit is generated or data, not code.
const maxSize = 1 << 20

// binaryByDesign lists files allowed to hold NUL bytes, each with why.
// Executables and the size limit have no exceptions.
var binaryByDesign = map[string]string{
	// "path/in/repo": "why it must be committed as bytes",
	"docs/studio.png": "the README shows the web page as TestStudio saw it in Chromium; a picture has no source form (the issue asks for one in docs/)",
}

func main() {
	out, err := exec.Command("git", "ls-files", "-z").Output()
	if err != nil {
		fmt.Fprintf(os.Stderr, "sourcesonly: git ls-files: %v\n", err)
		os.Exit(2)
	}
	var bad []string
	for _, path := range strings.Split(strings.TrimSuffix(string(out), "\x00"), "\x00") {
		problem, err := checkFile(path)
		if err != nil {
			fmt.Fprintf(os.Stderr, "sourcesonly: %v\n", err)
			os.Exit(2)
		}
		if problem != "" {
			bad = append(bad, path+": "+problem)
		}
	}
	if len(bad) > 0 {
		fmt.Fprintln(os.Stderr, "The repository holds sources only; these committed files are not:")
		for _, b := range bad {
			fmt.Fprintln(os.Stderr, "  "+b)
		}
		fmt.Fprintln(os.Stderr, "Remove them (git rm --cached FILE) and ignore build outputs in .gitignore;")
		fmt.Fprintln(os.Stderr, "a file that must be binary is listed in test/lint/sourcesonly/main.go (binaryByDesign) with why.")
		os.Exit(1)
	}
}

// checkFile says what is wrong with one committed file ("" if nothing).
func checkFile(path string) (string, error) {
	fi, err := os.Lstat(path)
	if os.IsNotExist(err) {
		return "", nil // deleted in the work tree: the commit that removes it is fine
	}
	if err != nil {
		return "", err
	}
	if !fi.Mode().IsRegular() {
		return "", nil // symlinks, submodules
	}
	if fi.Size() > maxSize {
		return fmt.Sprintf("%d bytes, over the %d-byte limit", fi.Size(), maxSize), nil
	}
	data, err := os.ReadFile(path)
	if err != nil {
		return "", err
	}
	_, allowed := binaryByDesign[path]
	return classify(data, allowed), nil
}

// classify says why content is not a source ("" if it is one).
func classify(data []byte, nulAllowed bool) string {
	if kind := executableKind(data); kind != "" {
		return kind + " executable"
	}
	if !nulAllowed && bytes.IndexByte(data, 0) >= 0 {
		return "binary data (contains NUL bytes)"
	}
	return ""
}

// executableKind recognises ELF, Mach-O (thin and fat) and PE files by
// their magic numbers.
func executableKind(data []byte) string {
	switch {
	case bytes.HasPrefix(data, []byte("\x7fELF")):
		return "ELF"
	case len(data) >= 4:
		switch binary.BigEndian.Uint32(data) {
		case 0xfeedface, 0xfeedfacf, 0xcefaedfe, 0xcffaedfe:
			return "Mach-O"
		case 0xcafebabe: // also a Java class file: neither belongs here
			return "Mach-O universal"
		}
	}
	if isPE(data) {
		return "PE"
	}
	return ""
}

// isPE: "MZ", and at the offset stored at 0x3c, "PE\0\0". Checking both
// keeps a text file that happens to start with "MZ" a text file.
func isPE(data []byte) bool {
	if !bytes.HasPrefix(data, []byte("MZ")) || len(data) < 0x40 {
		return false
	}
	off := int64(binary.LittleEndian.Uint32(data[0x3c:]))
	sig := make([]byte, 4)
	if _, err := bytes.NewReader(data).ReadAt(sig, off); err != nil && err != io.EOF {
		return false
	}
	return bytes.Equal(sig, []byte("PE\x00\x00"))
}
