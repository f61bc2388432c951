package ops

import "testing"

func TestParseCrashPoint(t *testing.T) {
	tests := []struct {
		in      string
		want    *CrashPoint
		wantErr bool
	}{
		{in: ""},
		{in: "create/boot", want: &CrashPoint{kind: "create", step: "boot"}},
		{in: "delete/remove-files/after", want: &CrashPoint{kind: "delete", step: "remove-files", after: true}},
		{in: "create", wantErr: true},
		{in: "/boot", wantErr: true},
		{in: "create/", wantErr: true},
		{in: "create/a/b", wantErr: true},
	}
	for _, tt := range tests {
		got, err := ParseCrashPoint(tt.in)
		if (err != nil) != tt.wantErr {
			t.Errorf("ParseCrashPoint(%q) error = %v, want error %v", tt.in, err, tt.wantErr)
			continue
		}
		if tt.want == nil && got != nil || tt.want != nil && (got == nil || *got != *tt.want) {
			t.Errorf("ParseCrashPoint(%q) = %+v, want %+v", tt.in, got, tt.want)
		}
		if got != nil && got.String() != tt.in {
			t.Errorf("String() = %q, want %q", got.String(), tt.in)
		}
	}
}
