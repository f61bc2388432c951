package guest

import (
	"bytes"
	"errors"
	"fmt"
	"net/netip"
	"path"
	"strconv"
	"strings"
	"time"

	"github.com/labvm/labvm/vm"
)

// This file is the guest side of `labvm cp`: the guest paths a copy
// names, and the small POSIX sh scripts (busybox sh and dash alike) that
// look a path up, move the bytes over one TCP connection from the daemon,
// and put a finished file or tree in place.

// PathKind says how a guest path given by a user is anchored.
type PathKind int

const (
	// PathHome is relative to the guest user's home ("~", "~/x", "x").
	PathHome PathKind = iota
	// PathAbsolute starts at the guest's root.
	PathAbsolute
)

// GuestPath is a path as a user wrote it after "NAME:", split into how
// it is anchored and the rest.
type GuestPath struct {
	Kind PathKind
	// Rest is the path after "~/" (PathHome, "" for the home itself) or
	// the whole absolute path, cleaned, without a trailing slash.
	Rest string
	// Dir is set when the user wrote a trailing "/" (or named the home):
	// the path must be a directory, to copy into.
	Dir bool
}

// ParseGuestPath parses the part of "NAME:PATH" after the colon. "~",
// "~/" and "" are the home; "~/x" and a relative "x" are under it; "/x"
// is absolute. "~user" is refused: a copy acts as the instance's own
// user only.
func ParseGuestPath(p string) (GuestPath, error) {
	if strings.IndexByte(p, 0) >= 0 {
		return GuestPath{}, errors.New("guest path contains a NUL byte")
	}
	dir := p == "" || p == "~" || p == "." || strings.HasSuffix(p, "/") || strings.HasSuffix(p, "/.")
	if strings.HasPrefix(p, "/") {
		return GuestPath{Kind: PathAbsolute, Rest: path.Clean(p), Dir: dir}, nil
	}
	if strings.HasPrefix(p, "~") {
		if p != "~" && !strings.HasPrefix(p, "~/") {
			return GuestPath{}, fmt.Errorf("guest path %q: ~USER is not supported; a copy acts as the instance's user, whose home is ~", p)
		}
		p = strings.TrimLeft(p[1:], "/")
	}
	c := path.Clean(p)
	if c == ".." || strings.HasPrefix(c, "../") {
		return GuestPath{}, fmt.Errorf("guest path %q leaves the home directory; give an absolute path instead", p)
	}
	if p == "" || c == "." {
		return GuestPath{Kind: PathHome, Dir: true}, nil
	}
	return GuestPath{Kind: PathHome, Rest: c, Dir: dir}, nil
}

func (k PathKind) arg() string {
	if k == PathAbsolute {
		return "abs"
	}
	return "home"
}

// FileType is what a guest path is, as the probe saw it (following
// symlinks).
type FileType string

const (
	TypeMissing FileType = "-"
	TypeDir     FileType = "d"
	TypeFile    FileType = "f"
	// TypeOther is a device, a FIFO, a socket.
	TypeOther FileType = "o"
)

// Probe is what the guest said about a copy's user and path.
type Probe struct {
	UID, GID int
	Home     string
	// Path is the resolved absolute path; Type what it is, ParentType
	// what its directory is.
	Path       string
	Type       FileType
	ParentType FileType
	// Mode (permission bits) and Size of Path when it exists.
	Mode uint32
	Size int64
	// ChildType is the type of Path/base when a base name was asked for.
	ChildType FileType
}

// ErrNoGuestUser means the instance's user has no account in the guest.
var ErrNoGuestUser = errors.New("no such user in the guest")

// ProbeRequest looks up user (uid, gid, home) and the path p, and, when
// base is not empty, the entry base inside it.
func ProbeRequest(user string, p GuestPath, base string) vm.ExecRequest {
	return vm.ExecRequest{Path: "/bin/sh", Args: []string{"-c", probeScript, "labvm-cp", user, p.Kind.arg(), p.Rest, base}}
}

const probeScript = `u=$1 kind=$2 rest=$3 base=$4
line=$(awk -F: -v u="$u" '$1 == u { print $3 ":" $4 ":" $6; exit }' /etc/passwd 2>/dev/null)
if [ -z "$line" ] && command -v getent >/dev/null 2>&1; then
	line=$(getent passwd "$u" | awk -F: '{ print $3 ":" $4 ":" $6; exit }')
fi
if [ -z "$line" ]; then printf 'nouser\0'; exit 0; fi
uid=${line%%:*}; line=${line#*:}; gid=${line%%:*}; home=${line#*:}
if [ "$kind" = abs ]; then p=$rest; elif [ -n "$rest" ]; then p=${home%/}/$rest; else p=$home; fi
par=${p%/*}; [ -n "$par" ] || par=/
t() { if [ -d "$1" ]; then echo d; elif [ -f "$1" ]; then echo f; elif [ -e "$1" ]; then echo o; else echo -; fi; }
ms="0 0"; if [ -e "$p" ]; then ms=$(stat -L -c '%a %s' -- "$p" 2>/dev/null) || ms="0 0"; fi
ct=-; [ -n "$base" ] && ct=$(t "${p%/}/$base")
printf '%s\0' ok "$uid" "$gid" "$home" "$p" "$(t "$p")" "$(t "$par")" "${ms% *}" "${ms#* }" "$ct"
`

// ParseProbe reads what ProbeRequest printed.
func ParseProbe(out []byte) (Probe, error) {
	f := strings.Split(strings.TrimSuffix(string(out), "\x00"), "\x00")
	if len(f) == 1 && f[0] == "nouser" {
		return Probe{}, ErrNoGuestUser
	}
	if len(f) != 10 || f[0] != "ok" {
		return Probe{}, fmt.Errorf("unexpected answer from the guest: %.200q", out)
	}
	var p Probe
	var err error
	if p.UID, err = strconv.Atoi(f[1]); err != nil {
		return p, fmt.Errorf("guest uid %q: %w", f[1], err)
	}
	if p.GID, err = strconv.Atoi(f[2]); err != nil {
		return p, fmt.Errorf("guest gid %q: %w", f[2], err)
	}
	p.Home, p.Path = f[3], f[4]
	p.Type, p.ParentType, p.ChildType = FileType(f[5]), FileType(f[6]), FileType(f[9])
	for _, t := range []FileType{p.Type, p.ParentType, p.ChildType} {
		switch t {
		case TypeMissing, TypeDir, TypeFile, TypeOther:
		default:
			return p, fmt.Errorf("unexpected file type %q from the guest", t)
		}
	}
	mode, err := strconv.ParseUint(f[7], 8, 32)
	if err != nil {
		return p, fmt.Errorf("guest mode %q: %w", f[7], err)
	}
	p.Mode = uint32(mode)
	if p.Size, err = strconv.ParseInt(f[8], 10, 64); err != nil {
		return p, fmt.Errorf("guest size %q: %w", f[8], err)
	}
	if !strings.HasPrefix(p.Path, "/") {
		return p, fmt.Errorf("guest path %q is not absolute (home %q)", p.Path, p.Home)
	}
	return p, nil
}

// TempName is the name a copy writes under before it renames: hidden, in
// the target's own directory (so the rename is atomic), and marked as
// labvm's so a leftover is recognisable.
func TempName(dir, token, suffix string) string {
	return path.Join(dir, ".labvm-cp-"+token+suffix)
}

// MkdirRequest makes the directory p (its parent exists) owned by the
// user: the target of a copy "into NAME:dir/" that is not there yet.
func MkdirRequest(p string, uid, gid int) vm.ExecRequest {
	return vm.ExecRequest{Path: "/bin/sh", Args: []string{"-c", `mkdir -- "$1" && chown "$2:$3" -- "$1"`, "labvm-cp", p, strconv.Itoa(uid), strconv.Itoa(gid)}}
}

// FinishFileRequest gives the uploaded temp file its owner and mode and
// renames it over dst; on failure it removes the temp file.
func FinishFileRequest(tmp, dst string, uid, gid int, mode uint32) vm.ExecRequest {
	return vm.ExecRequest{Path: "/bin/sh", Args: []string{"-c", `tmp=$1 dst=$2
if chown "$3:$4" -- "$tmp" && chmod "$5" -- "$tmp" && mv -f -- "$tmp" "$dst"; then exit 0; fi
rm -f -- "$tmp"; exit 1`, "labvm-cp", tmp, dst, strconv.Itoa(uid), strconv.Itoa(gid), fmt.Sprintf("%04o", mode&0o777)}}
}

// StreamMode is what the guest end of a copy's byte stream does.
type StreamMode string

const (
	// StreamWrite writes what arrives to a new file.
	StreamWrite StreamMode = "in"
	// StreamRead sends a file.
	StreamRead StreamMode = "out"
	// StreamUnpack unpacks the tar stream that arrives into a directory.
	StreamUnpack StreamMode = "untar"
	// StreamPack sends a tar stream of a directory, entries "./…".
	StreamPack StreamMode = "tar"
)

// StreamAck is the line the guest end answers the right token with, before
// any data.
const StreamAck = "labvm-cp ok"

// TokenEnv carries the copy's token to the guest end: the environment of
// a root process, unlike its command line, is not readable by the
// guest's other users.
const TokenEnv = "LABVM_CP_TOKEN"

// StreamRequest starts the guest end of a copy: a listener on port that
// takes the first connection from host (the daemon's address on the
// instance's bridge, its gateway) that sends token and a newline, then
// moves the bytes (mode) between it and p, and exits non-zero on any
// failure with the reason on stderr. Connections from any other address
// (a peer guest on a VNet that allows peer traffic, a process in the
// guest itself) are closed at once and change nothing; the bridge's port
// security keeps a guest from sending with the gateway's address. It uses
// python3 (every cloud image has it for cloud-init) or else busybox nc.
func StreamRequest(mode StreamMode, port int, p, token string, host netip.Addr) vm.ExecRequest {
	return vm.ExecRequest{
		Path: "/bin/sh",
		Args: []string{"-c", streamScript, "labvm-cp", string(mode), strconv.Itoa(port), p, host.String(), procNetHex(host), streamPython, streamBusybox, streamShell},
		Env:  []string{TokenEnv + "=" + token, "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "LC_ALL=C"},
	}
}

// procNetHex is how /proc/net/tcp writes an IPv4 address on a
// little-endian machine (x86_64 and aarch64 guests): the four bytes as
// one native 32-bit word, in hex.
func procNetHex(a netip.Addr) string {
	b := a.Unmap().As4()
	return fmt.Sprintf("%02X%02X%02X%02X", b[3], b[2], b[1], b[0])
}

// StreamRefusedPrefix starts each line the busybox end writes to stderr
// for a connection it closed: not the daemon's, or without the token.
const StreamRefusedPrefix = "labvm cp: refused "

// StreamTimeout bounds how long the guest end waits for the daemon's
// connection; the daemon gives up dialling well before.
const StreamTimeout = 120 * time.Second

const streamScript = `if command -v python3 >/dev/null 2>&1; then exec python3 -c "$6" "$1" "$2" "$3" "$4"; fi
if command -v busybox >/dev/null 2>&1 && busybox nc --help 2>&1 | grep -q -- '-e PROG'; then
	exec /bin/sh -c "$7" labvm-cp "$1" "$2" "$3" "$5" "$8"
fi
echo "labvm cp needs python3 or busybox nc in the guest" >&2
exit 127`

// streamBusybox is the busybox nc end (the tiny test image; cloud images
// have python3). busybox nc -l takes one connection, closes its listener
// and runs streamShell on it; it cannot filter by source address. So
// streamShell checks the peer itself and exits 97 for a connection that is
// not the daemon's (another address, or no token), and this loop listens
// again, until StreamTimeout. Arguments: mode, port, path, the host's
// address as /proc/net/tcp writes it, streamShell.
var streamBusybox = `end=$(( $(date +%s) + ` + strconv.Itoa(int(StreamTimeout/time.Second)) + ` ))
while :; do
	busybox nc -l -p "$2" -e /bin/sh -c "$5" labvm-cp "$1" "$3" "$4"
	rc=$?
	[ "$rc" -eq 97 ] || exit "$rc"
	if [ "$(date +%s)" -ge "$end" ]; then echo "labvm cp: no connection from the host with the copy's token" >&2; exit 3; fi
done`

// streamShell runs on the one connection busybox nc accepted, as stdin
// and stdout. The peer's address is found by the socket's inode in
// /proc/net/tcp (or tcp6, IPv4-mapped, when nc listens on ::); anything
// but the host is closed before a byte is read. sh's read takes the line
// byte by byte, so nothing after the token is consumed.
const streamShell = `ino=$(readlink /proc/$$/fd/0); ino=${ino#socket:?}; ino=${ino%?}
peer=$(awk -v i="$ino" '$10 == i { sub(/:.*/, "", $3); print $3; exit }' /proc/net/tcp /proc/net/tcp6 2>/dev/null)
case $peer in
"$3"|0000000000000000FFFF0000"$3") ;;
*) echo "labvm cp: refused a connection from another address ($peer)" >&2; exit 97 ;;
esac
read -r tok || { echo "labvm cp: refused a connection closed before the token" >&2; exit 97; }
[ "$tok" = "$LABVM_CP_TOKEN" ] || { echo "labvm cp: refused a connection without the copy's token" >&2; exit 97; }
echo "labvm-cp ok"
case $1 in
in) cat >"$2" ;;
out) cat -- "$2" ;;
untar) tar -x -f - -C "$2" ;;
tar) tar -c -f - -C "$2" . ;;
esac`

// streamPython is the python3 end. It accepts without blocking on any one
// connection: a connection from an address other than the host is closed
// at once and not counted; the host's connections (at most 8 pending,
// 64 in all) each have 10 s to send the token while the others are
// served, so nothing a peer does stalls the copy until StreamTimeout. The
// token is compared in constant time.
var streamPython = `import hmac, os, select, socket, subprocess, sys, time
mode, port, path, host = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
tok = (os.environ["LABVM_CP_TOKEN"] + "\n").encode()
ls = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
ls.bind(("0.0.0.0", port))
ls.listen(64)
ls.setblocking(False)
end = time.monotonic() + ` + strconv.Itoa(int(StreamTimeout/time.Second)) + `
pend = {}
tries = 0
c = None
while c is None:
    now = time.monotonic()
    if now >= end or (tries >= 64 and not pend):
        sys.exit("labvm cp: no connection from the host with the copy's token")
    for s in [s for s in pend if pend[s][0] <= now]:
        s.close()
        del pend[s]
    r, _, _ = select.select([ls] + list(pend), [], [], min(1.0, end - now))
    for s in r:
        if s is ls:
            for _ in range(64):
                try:
                    n, a = ls.accept()
                except OSError:
                    break
                if a[0] != host or len(pend) >= 8 or tries >= 64:
                    n.close()
                    continue
                tries += 1
                n.setblocking(False)
                pend[n] = [now + 10, b""]
            continue
        st = pend.get(s)
        if st is None:
            continue
        try:
            b = s.recv(len(tok) - len(st[1]))
        except BlockingIOError:
            continue
        except OSError:
            b = b""
        st[1] += b
        if b and len(st[1]) < len(tok):
            continue
        del pend[s]
        if b and hmac.compare_digest(st[1], tok):
            c = s
            break
        s.close()
for s in pend:
    s.close()
ls.close()
c.setblocking(True)
c.sendall(b"labvm-cp ok\n")
c.settimeout(600)
def pump_in(w):
    while True:
        b = c.recv(1 << 20)
        if not b:
            return
        w.write(b)
def pump_out(r):
    while True:
        b = r.read(1 << 20)
        if not b:
            return
        c.sendall(b)
if mode == "in":
    with open(path, "wb") as f:
        pump_in(f)
elif mode == "out":
    with open(path, "rb") as f:
        pump_out(f)
elif mode == "untar":
    p = subprocess.Popen(["tar", "-x", "-f", "-", "-C", path], stdin=subprocess.PIPE)
    try:
        pump_in(p.stdin)
        p.stdin.close()
    finally:
        if p.wait() != 0:
            sys.exit("labvm cp: tar -x exited %d" % p.returncode)
elif mode == "tar":
    p = subprocess.Popen(["tar", "-c", "-f", "-", "-C", path, "."], stdout=subprocess.PIPE)
    pump_out(p.stdout)
    if p.wait() != 0:
        sys.exit("labvm cp: tar -c exited %d" % p.returncode)
c.close()
`

// MkdirPrivateRequest makes the directory a tree is unpacked into before
// it is renamed into place: root's, mode 0700, next to the target.
func MkdirPrivateRequest(p string) vm.ExecRequest {
	return vm.ExecRequest{Path: "/bin/sh", Args: []string{"-c", `mkdir -m 700 -- "$1"`, "labvm-cp", p}}
}

// FinishTreeRequest gives an unpacked tree to the user, gives its top the
// directory's mode and renames it to dst, which must not exist; on
// failure it removes the tree.
func FinishTreeRequest(stage, dst string, uid, gid int, mode uint32) vm.ExecRequest {
	return vm.ExecRequest{Path: "/bin/sh", Args: []string{"-c", `stage=$1 dst=$2
fail() { rm -rf -- "$stage"; exit 1; }
chown -R -h "$3:$4" -- "$stage" || fail
chmod "$5" -- "$stage" || fail
if [ -e "$dst" ]; then echo "$dst appeared during the copy" >&2; fail; fi
mv -- "$stage" "$dst" || fail`, "labvm-cp", stage, dst, strconv.Itoa(uid), strconv.Itoa(gid), fmt.Sprintf("%04o", mode&0o777)}}
}

// RemoveRequest removes leftovers of a copy that failed.
func RemoveRequest(paths ...string) vm.ExecRequest {
	return vm.ExecRequest{Path: "/bin/sh", Args: append([]string{"-c", `rm -rf -- "$@"`, "labvm-cp"}, paths...)}
}

// DiskFull says whether what a guest command or the agent reported is
// ENOSPC (or EDQUOT): the same text in glibc and musl.
func DiskFull(msg []byte) bool {
	return bytes.Contains(msg, []byte("No space left on device")) || bytes.Contains(msg, []byte("Disk quota exceeded"))
}
