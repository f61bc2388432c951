package lifecycle

import (
	"context"
	"testing"
	"time"

	"github.com/labvm/labvm/vm"
)

// noAgent is a hypervisor whose guests never answer, like test:///default.
type noAgent struct {
	Hypervisor
	domains map[string]bool
}

func (n noAgent) DomainState(ctx context.Context, name string) (vm.DomainStatus, error) {
	if n.domains[name] {
		return vm.DomainRunning, nil
	}
	return vm.DomainAbsent, nil
}

func (noAgent) AgentPing(ctx context.Context, name string) error { return vm.ErrAgentUnavailable }

// TestReadyProbeNone: with --ready-probe none a running domain is ready
// at once, without a guest agent; a domain that is not running is not.
func TestReadyProbeNone(t *testing.T) {
	cfg := Config{ReadyProbe: ReadyProbeNone, ReadyTimeout: time.Minute}
	d := New(cfg, Deps{Hypervisor: noAgent{domains: map[string]bool{"labvm-a-12345678": true}}})
	start := time.Now()
	if err := d.waitReady(context.Background(), vm.Instance{ID: "1234567890abcdef", Domain: "labvm-a-12345678"}, nil); err != nil {
		t.Fatalf("running domain: %v", err)
	}
	if took := time.Since(start); took > time.Second {
		t.Fatalf("ready took %s, want at once", took)
	}
	if err := d.waitReady(context.Background(), vm.Instance{ID: "2234567890abcdef", Domain: "labvm-b-22345678"}, nil); err == nil {
		t.Fatal("absent domain reported ready")
	}
}
