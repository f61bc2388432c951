package guest

import (
	"bytes"
	"errors"
	"fmt"
	"strconv"
	"strings"

	"github.com/labvm/labvm/vm"
	"github.com/labvm/labvm/vm/shell"
)

// JobDir is where a job's output goes in the guest: ID.out and
// ID.err, kept after the job ends.
const JobDir = "/var/lib/labvm/jobs"

// ValidateCommand checks an argv before it is handed to a guest.
func ValidateCommand(argv []string) error {
	if len(argv) == 0 || argv[0] == "" {
		return errors.New("no command given")
	}
	for i, w := range argv {
		if strings.IndexByte(w, 0) >= 0 {
			return fmt.Errorf("argument %d contains a NUL byte, which no program can receive", i)
		}
	}
	return nil
}

// JobOutputPaths are the guest files a job's streams go to.
func JobOutputPaths(id int) (stdout, stderr string) {
	base := fmt.Sprintf("%s/%d", JobDir, id)
	return base + ".out", base + ".err"
}

// JobStartRequest is the guest-exec that runs job id: a shell that sends
// its output to the job's files and then becomes the command, in a new
// session when the guest has setsid, so that the process group to kill is
// exactly the job (qemu-ga's children are never group leaders, so setsid
// does not fork and the pid the agent reports stays the job's). Exit 126
// without output means the output files could not be created.
func JobStartRequest(id int, argv []string) (vm.ExecRequest, error) {
	if err := ValidateCommand(argv); err != nil {
		return vm.ExecRequest{}, err
	}
	out, errPath := JobOutputPaths(id)
	cmd := shell.Join(argv...)
	// true, not exec, probes the files: a failed redirection of a special
	// builtin would end the shell with a status of its own choosing.
	script := fmt.Sprintf("{ mkdir -p %[1]s && true >%[2]s && true >%[3]s; } 2>/dev/null || exit 126\n"+
		"exec </dev/null >>%[2]s 2>>%[3]s\n"+
		"if command -v setsid >/dev/null 2>&1; then exec setsid %[4]s; fi\n"+
		"exec %[4]s",
		shell.Quote(JobDir), shell.Quote(out), shell.Quote(errPath), cmd)
	return vm.ExecRequest{Path: "/bin/sh", Args: []string{"-c", script}}, nil
}

// JobSignalRequest is the guest-exec that sends sig (TERM, KILL) to the
// job's process group, or to the process alone when it has no group of
// its own (a guest without setsid).
func JobSignalRequest(pid int, sig string) vm.ExecRequest {
	return vm.ExecRequest{Path: "/bin/sh", Args: []string{"-c",
		`kill -s "$1" -- "-$2" 2>/dev/null || kill -s "$1" "$2"`, "labvm-kill", sig, strconv.Itoa(pid)}}
}

// jobReadScript prints the file's size and the offset it reads from, one
// per line, then up to max bytes from that offset. A negative offset
// means the last max bytes. A missing file reads as empty.
const jobReadScript = `f=$1 off=$2 max=$3
size=$(wc -c <"$f" 2>/dev/null) || size=0
size=$((size + 0))
if [ "$off" -lt 0 ]; then off=$((size - max)); [ "$off" -lt 0 ] && off=0; fi
echo "$size"
echo "$off"
[ "$off" -lt "$size" ] || exit 0
tail -c +$((off + 1)) "$f" 2>/dev/null | head -c "$max"`

// JobReadRequest is the guest-exec that reads up to max bytes of a job's
// output file from offset (negative: the last max bytes).
func JobReadRequest(path string, offset int64, max int) vm.ExecRequest {
	return vm.ExecRequest{Path: "/bin/sh", Args: []string{"-c", jobReadScript, "labvm-read",
		path, strconv.FormatInt(offset, 10), strconv.Itoa(max)}}
}

// OutputChunk is a piece of a job's output file.
type OutputChunk struct {
	// Size is the file's size when it was read.
	Size int64
	// Offset is where Data starts in the file.
	Offset int64
	Data   []byte
}

// ParseJobRead decodes what JobReadRequest printed.
func ParseJobRead(out []byte) (OutputChunk, error) {
	var c OutputChunk
	nums := make([]int64, 2)
	for i := range nums {
		line, rest, found := bytes.Cut(out, []byte("\n"))
		if !found {
			return c, fmt.Errorf("read job output: short answer %.80q", out)
		}
		n, err := strconv.ParseInt(string(bytes.TrimSpace(line)), 10, 64)
		if err != nil || n < 0 {
			return c, fmt.Errorf("read job output: bad number %.40q", line)
		}
		nums[i], out = n, rest
	}
	c.Size, c.Offset, c.Data = nums[0], nums[1], out
	return c, nil
}
