package libvirt

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/labvm/labvm/vm"
)

func TestStartProcess(t *testing.T) {
	tests := []struct {
		name    string
		replies []string
		err     error
		want    int
		wantErr string
	}{
		{"started", []string{`{"return":{"pid":321}}`}, nil, 321, ""},
		{"agent error", []string{`{"error":{"class":"GenericError","desc":"Failed to execute child process"}}`}, nil, 0, "Failed to execute"},
		{"bad pid", []string{`{"return":{"pid":0}}`}, nil, 0, "pid 0"},
		{"no agent", nil, vm.ErrAgentUnavailable, 0, "guest agent unavailable"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := &fakeAgent{replies: tt.replies, err: tt.err}
			pid, err := startProcess(context.Background(), f.call, vm.ExecRequest{Path: "/bin/sh", Args: []string{"-c", "true"}})
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err = %v, want %q", err, tt.wantErr)
				}
				return
			}
			if err != nil || pid != tt.want {
				t.Fatalf("pid %d, %v", pid, err)
			}
			if len(f.retried) != 0 {
				t.Fatal("guest-exec sent as safe to repeat")
			}
			if strings.Contains(f.sent[0], "capture-output\":true") {
				t.Fatal("job output captured by the agent")
			}
		})
	}
}

func TestProcessStatus(t *testing.T) {
	tests := []struct {
		name    string
		reply   string
		err     error
		want    vm.ProcessStatus
		wantIs  error
		wantErr bool
	}{
		{"running", `{"return":{"exited":false}}`, nil, vm.ProcessStatus{}, nil, false},
		{"exited", `{"return":{"exited":true,"exitcode":2}}`, nil, vm.ProcessStatus{Exited: true, ExitCode: 2}, nil, false},
		{"killed", `{"return":{"exited":true,"signal":15}}`, nil, vm.ProcessStatus{Exited: true, Signal: 15}, nil, false},
		{"unknown pid in reply", `{"error":{"class":"GenericError","desc":"Invalid parameter 'pid'"}}`, nil, vm.ProcessStatus{}, vm.ErrUnknownPID, true},
		{"unknown pid from libvirt", "", errors.New("internal error: unable to execute QEMU agent command 'guest-exec-status': Invalid parameter 'pid'"), vm.ProcessStatus{}, vm.ErrUnknownPID, true},
		{"no agent", "", vm.ErrAgentUnavailable, vm.ProcessStatus{}, vm.ErrAgentUnavailable, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := &fakeAgent{err: tt.err}
			if tt.reply != "" {
				f.replies = []string{tt.reply}
			}
			got, err := processStatus(context.Background(), f.call, 5)
			if (err != nil) != tt.wantErr || (tt.wantIs != nil && !errors.Is(err, tt.wantIs)) {
				t.Fatalf("err = %v, want %v", err, tt.wantIs)
			}
			if got != tt.want {
				t.Fatalf("status = %+v, want %+v", got, tt.want)
			}
			if tt.wantIs == vm.ErrAgentUnavailable && errors.Is(err, vm.ErrUnknownPID) {
				t.Fatal("an unreachable agent read as an unknown pid")
			}
		})
	}
}
