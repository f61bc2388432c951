package libvirt

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/labvm/labvm/vm"
	virt "libvirt.org/go/libvirt"
)

func TestEncodeAgentCommand(t *testing.T) {
	tests := []struct {
		name    string
		execute string
		args    any
		want    string
	}{
		{"ping", "guest-ping", nil, `{"execute":"guest-ping"}`},
		{
			"exec minimal", "guest-exec",
			guestExecArgs{Path: "/bin/true", CaptureOutput: true},
			`{"execute":"guest-exec","arguments":{"path":"/bin/true","capture-output":true}}`,
		},
		{
			"exec full", "guest-exec",
			guestExecArgs{Path: "/bin/sh", Args: []string{"-c", `echo "hi"`}, Env: []string{"A=1"}, InputData: []byte("in\n"), CaptureOutput: true},
			`{"execute":"guest-exec","arguments":{"path":"/bin/sh","arg":["-c","echo \"hi\""],"env":["A=1"],"input-data":"aW4K","capture-output":true}}`,
		},
		{
			"exec empty input still sent", "guest-exec",
			guestExecArgs{Path: "/bin/cat", InputData: []byte{}, CaptureOutput: true},
			`{"execute":"guest-exec","arguments":{"path":"/bin/cat","input-data":"","capture-output":true}}`,
		},
		{"status", "guest-exec-status", guestExecStatusArgs{PID: 1234}, `{"execute":"guest-exec-status","arguments":{"pid":1234}}`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := encodeAgentCommand(tt.execute, tt.args)
			if err != nil {
				t.Fatal(err)
			}
			if string(got) != tt.want {
				t.Errorf("got  %s\nwant %s", got, tt.want)
			}
		})
	}
}

func TestDecodeExecStatus(t *testing.T) {
	tests := []struct {
		name    string
		reply   string
		want    guestExecStatus
		wantErr bool
	}{
		{"running", `{"return":{"exited":false}}`, guestExecStatus{}, false},
		{
			"exited with output",
			`{"return":{"exited":true,"exitcode":3,"out-data":"aGVsbG8K","err-data":"b29wcw==","out-truncated":true}}`,
			guestExecStatus{Exited: true, ExitCode: 3, OutData: []byte("hello\n"), ErrData: []byte("oops"), OutTruncated: true},
			false,
		},
		{"killed", `{"return":{"exited":true,"signal":9}}`, guestExecStatus{Exited: true, Signal: 9}, false},
		{"agent error", `{"error":{"class":"GenericError","desc":"Invalid parameter 'pid'"}}`, guestExecStatus{}, true},
		{"no return", `{}`, guestExecStatus{}, true},
		{"bad base64", `{"return":{"exited":true,"out-data":"!!"}}`, guestExecStatus{}, true},
		{"not json", `<html>`, guestExecStatus{}, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := decodeAgentReply[guestExecStatus]([]byte(tt.reply))
			if (err != nil) != tt.wantErr {
				t.Fatalf("err = %v, wantErr %v", err, tt.wantErr)
			}
			if fmt.Sprintf("%+v", got) != fmt.Sprintf("%+v", tt.want) {
				t.Errorf("got %+v, want %+v", got, tt.want)
			}
		})
	}
}

// fakeAgent replays canned replies and records the commands it was sent.
type fakeAgent struct {
	replies []string
	err     error
	sent    []string
	// retried lists commands sent as safe to repeat after a reconnect.
	retried []string
}

func (f *fakeAgent) call(ctx context.Context, cmd []byte, idempotent bool) ([]byte, error) {
	f.sent = append(f.sent, string(cmd))
	if idempotent {
		f.retried = append(f.retried, string(cmd))
	}
	if f.err != nil {
		return nil, f.err
	}
	if len(f.replies) == 0 {
		return []byte(`{"return":{"exited":false}}`), nil
	}
	r := f.replies[0]
	f.replies = f.replies[1:]
	return []byte(r), nil
}

func TestRunExec(t *testing.T) {
	tests := []struct {
		name      string
		req       vm.ExecRequest
		replies   []string
		agentErr  error
		timeout   time.Duration
		want      vm.ExecResult
		wantErrIs []error
		wantSent  int
	}{
		{
			name: "exits after two polls",
			req:  vm.ExecRequest{Path: "/bin/echo", Args: []string{"hi"}},
			replies: []string{
				`{"return":{"pid":42}}`,
				`{"return":{"exited":false}}`,
				`{"return":{"exited":true,"exitcode":0,"out-data":"aGkK"}}`,
			},
			want:     vm.ExecResult{Stdout: []byte("hi\n")},
			wantSent: 3,
		},
		{
			name: "nonzero exit and truncated stderr",
			req:  vm.ExecRequest{Path: "/bin/false"},
			replies: []string{
				`{"return":{"pid":7}}`,
				`{"return":{"exited":true,"exitcode":1,"err-data":"eA==","err-truncated":true}}`,
			},
			want:     vm.ExecResult{ExitCode: 1, Stderr: []byte("x"), Truncated: true},
			wantSent: 2,
		},
		{
			name:      "deadline while running",
			req:       vm.ExecRequest{Path: "/bin/sleep", Args: []string{"1000"}},
			replies:   []string{`{"return":{"pid":9}}`},
			timeout:   200 * time.Millisecond,
			wantErrIs: []error{vm.ErrExecTimeout, context.DeadlineExceeded},
		},
		{
			name:      "agent not connected",
			req:       vm.ExecRequest{Path: "/bin/true"},
			agentErr:  fmt.Errorf("%w: not connected", vm.ErrAgentUnavailable),
			wantErrIs: []error{vm.ErrAgentUnavailable},
			wantSent:  1,
		},
		{
			name:      "empty path",
			req:       vm.ExecRequest{},
			wantErrIs: []error{},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx := t.Context()
			if tt.timeout > 0 {
				var cancel context.CancelFunc
				ctx, cancel = context.WithTimeout(ctx, tt.timeout)
				defer cancel()
			}
			fa := &fakeAgent{replies: tt.replies, err: tt.agentErr}
			got, err := runExec(ctx, fa.call, tt.req)
			if tt.wantErrIs != nil {
				if err == nil {
					t.Fatalf("runExec = %+v, want error", got)
				}
				for _, target := range tt.wantErrIs {
					if !errors.Is(err, target) {
						t.Errorf("error %v does not wrap %v", err, target)
					}
				}
				return
			}
			if err != nil {
				t.Fatalf("runExec: %v", err)
			}
			if got.ExitCode != tt.want.ExitCode || got.Signal != tt.want.Signal || got.Truncated != tt.want.Truncated ||
				!bytes.Equal(got.Stdout, tt.want.Stdout) || !bytes.Equal(got.Stderr, tt.want.Stderr) {
				t.Errorf("runExec = %+v, want %+v", got, tt.want)
			}
			if tt.wantSent > 0 && len(fa.sent) != tt.wantSent {
				t.Errorf("sent %d commands, want %d: %q", len(fa.sent), tt.wantSent, fa.sent)
			}
			for _, c := range fa.retried {
				if strings.Contains(c, `"guest-exec"`) {
					t.Errorf("guest-exec marked safe to resend: a retry could run the command twice")
				}
			}
		})
	}
}

func TestRunExecCancelIsNotTimeout(t *testing.T) {
	ctx, cancel := context.WithCancel(t.Context())
	fa := &fakeAgent{replies: []string{`{"return":{"pid":1}}`}}
	time.AfterFunc(100*time.Millisecond, cancel)
	_, err := runExec(ctx, fa.call, vm.ExecRequest{Path: "/bin/sleep"})
	if !errors.Is(err, context.Canceled) || errors.Is(err, vm.ErrExecTimeout) {
		t.Fatalf("runExec after cancel = %v, want Canceled and not vm.ErrExecTimeout", err)
	}
}

func TestClassifyAgentError(t *testing.T) {
	tests := []struct {
		code        virt.ErrorNumber
		unavailable bool
	}{
		{virt.ERR_AGENT_UNRESPONSIVE, true},
		{virt.ERR_AGENT_COMMAND_TIMEOUT, true},
		{virt.ERR_ARGUMENT_UNSUPPORTED, true},
		{virt.ERR_NO_SUPPORT, true},
		{virt.ERR_OPERATION_INVALID, true},
		// A failed command (no such file in the guest) is the caller's
		// problem, not a missing agent: retrying would not help.
		{virt.ERR_INTERNAL_ERROR, false},
		{virt.ERR_AGENT_COMMAND_FAILED, false},
	}
	for _, tt := range tests {
		err := classifyAgentError(fmt.Errorf("call: %w", virt.Error{Code: tt.code}))
		if got := errors.Is(err, vm.ErrAgentUnavailable); got != tt.unavailable {
			t.Errorf("code %d: unavailable = %v, want %v (%v)", tt.code, got, tt.unavailable, err)
		}
	}
}

func TestAgentTimeout(t *testing.T) {
	tests := []struct {
		name     string
		deadline time.Duration // 0: none
		want     virt.DomainQemuAgentCommandTimeout
	}{
		{"no deadline", 0, virt.DomainQemuAgentCommandTimeout(agentCallTimeout / time.Second)},
		{"far deadline", time.Hour, virt.DomainQemuAgentCommandTimeout(agentCallTimeout / time.Second)},
		{"near deadline", 3500 * time.Millisecond, 3},
		{"expiring", time.Millisecond, 1},
	}
	for _, tt := range tests {
		ctx := context.Background()
		if tt.deadline > 0 {
			var cancel context.CancelFunc
			ctx, cancel = context.WithTimeout(ctx, tt.deadline)
			defer cancel()
		}
		if got := agentTimeout(ctx); got != tt.want {
			t.Errorf("%s: agentTimeout = %d, want %d", tt.name, got, tt.want)
		}
	}
}
