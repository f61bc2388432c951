package vm

import (
	"errors"
	"testing"
)

func TestCatalogue(t *testing.T) {
	c, err := NewCatalogue(DefaultSizes(), []Size{{Name: "Lab_Big", Family: "labFamily", VCPUs: 8, MemoryMiB: 65536}})
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name    string
		vcpus   int
		memMiB  int
		wantErr error
	}{
		{"Standard_B1s", 1, 1024, nil},
		{"Standard_B2s", 2, 4096, nil},
		{"Standard_DS11_v2", 2, 14336, nil},
		{"Standard_D3_v2", 4, 14336, nil},
		{"Standard_DS3_v2", 4, 14336, nil},
		{"Lab_Big", 8, 65536, nil},
		{"standard_b1s", 0, 0, ErrUnknownSize},
		{"", 0, 0, ErrUnknownSize},
	}
	for _, tt := range tests {
		s, err := c.Lookup(tt.name)
		if !errors.Is(err, tt.wantErr) {
			t.Errorf("Lookup(%q) error = %v, want %v", tt.name, err, tt.wantErr)
			continue
		}
		if err == nil && (s.VCPUs != tt.vcpus || s.MemoryMiB != tt.memMiB) {
			t.Errorf("Lookup(%q) = %+v", tt.name, s)
		}
	}
}

func TestCatalogueRejectsBadSizes(t *testing.T) {
	bad := []Size{
		{Name: "", Family: "f", VCPUs: 1, MemoryMiB: 1024},
		{Name: "a b", Family: "f", VCPUs: 1, MemoryMiB: 1024},
		{Name: "x", Family: "", VCPUs: 1, MemoryMiB: 1024},
		{Name: "x", Family: "f", VCPUs: 0, MemoryMiB: 1024},
		{Name: "x", Family: "f", VCPUs: 1, MemoryMiB: 64},
	}
	for _, s := range bad {
		if _, err := NewCatalogue([]Size{s}); err == nil {
			t.Errorf("size %+v accepted", s)
		}
	}
}
