package main

import (
	"encoding/binary"
	"os"
	"testing"
)

func TestClassify(t *testing.T) {
	pe := make([]byte, 0x80)
	copy(pe, "MZ")
	binary.LittleEndian.PutUint32(pe[0x3c:], 0x40)
	copy(pe[0x40:], "PE\x00\x00")
	self, err := os.Executable() // the test binary: an ELF on Linux
	if err != nil {
		t.Fatal(err)
	}
	elf, err := os.ReadFile(self)
	if err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct {
		name       string
		data       []byte
		nulAllowed bool
		want       string
	}{
		{"go source", []byte("package main\n"), false, ""},
		{"empty", nil, false, ""},
		{"elf", elf, false, "ELF executable"},
		{"elf even where NUL is allowed", elf, true, "ELF executable"},
		{"mach-o 64", []byte("\xcf\xfa\xed\xfe\x07\x00\x00\x01"), false, "Mach-O executable"},
		{"pe", pe, false, "PE executable"},
		{"text starting with MZ", []byte("MZ is a text file that happens to start like a DOS header, and goes on for more than sixty-four bytes\n"), false, ""},
		{"nul", []byte("QFI\xfb\x00\x00\x00\x03"), false, "binary data (contains NUL bytes)"},
		{"nul allowed", []byte("QFI\xfb\x00\x00\x00\x03"), true, ""},
	} {
		if got := classify(tt.data, tt.nulAllowed); got != tt.want {
			t.Errorf("%s: classify = %q, want %q", tt.name, got, tt.want)
		}
	}
}
