package vm

import (
	"errors"
	"regexp"
	"strings"
	"testing"
)

func TestValidateName(t *testing.T) {
	tests := []struct {
		name string
		ok   bool
	}{
		{"alice-dev", true},
		{"abc", true},
		{"a1-2-3", true},
		{strings.Repeat("a", 24), true},
		{"ab", false},
		{strings.Repeat("a", 25), false},
		{"1abc", false},
		{"-abc", false},
		{"abc-", false},
		{"Alice", false},
		{"al_ice", false},
		{"al/ice", false},
		{"al\x00ice", false},
		{"../etc", false},
		{"alice dev", false},
		{"ålice", false},
	}
	for _, tt := range tests {
		err := ValidateName(tt.name)
		if tt.ok && err != nil {
			t.Errorf("ValidateName(%q) = %v, want nil", tt.name, err)
		}
		if !tt.ok && !errors.Is(err, ErrInvalidName) {
			t.Errorf("ValidateName(%q) = %v, want ErrInvalidName", tt.name, err)
		}
	}
}

var nameRule = regexp.MustCompile(`^[a-z][a-z0-9-]{1,22}[a-z0-9]$`)

func FuzzValidateName(f *testing.F) {
	for _, s := range []string{"alice-dev", "a", "ab-", "x\x00y", strings.Repeat("z", 100)} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		// The rule, restated independently of the loop in ValidateName,
		// must agree both ways; refusals must stay InvalidArgument.
		err := ValidateName(s)
		if (err == nil) != nameRule.MatchString(s) {
			t.Fatalf("ValidateName(%q) = %v, but the rule says valid=%v", s, err, nameRule.MatchString(s))
		}
		if err != nil && !errors.Is(err, ErrInvalidName) {
			t.Fatalf("ValidateName(%q) = %v, want ErrInvalidName", s, err)
		}
	})
}

func TestDomainNameUnique(t *testing.T) {
	a, b := NewID(), NewID()
	if a == b {
		t.Fatal("two ids are equal")
	}
	if DomainName("x", a) == DomainName("x", b) {
		t.Fatal("domain names collide for different ids")
	}
}
