package errdefs

import (
	"fmt"
	"testing"

	"github.com/labvm/labvm/daemon/api"
)

// TestWrappedKindKeepsItsCode: a kind wrapped with %w (not built with New)
// still maps to its code, never to Internal.
func TestWrappedKindKeepsItsCode(t *testing.T) {
	tests := []struct {
		err  error
		want api.Code
	}{
		{fmt.Errorf("vnet research is used by lab-one; delete those instances first: %w", ErrConflict), api.CodeConflict},
		{fmt.Errorf("x: %w", ErrNotFound), api.CodeNotFound},
		{fmt.Errorf("outer: %w", fmt.Errorf("inner: %w", ErrInvalidArgument)), api.CodeInvalidArgument},
		{fmt.Errorf("plain failure"), api.CodeInternal},
	}
	for _, tt := range tests {
		if got := ToAPI(tt.err); got.Code != tt.want || got.Message != tt.err.Error() {
			t.Errorf("ToAPI(%q) = %s %q, want %s", tt.err, got.Code, got.Message, tt.want)
		}
	}
}
