package network

import (
	"fmt"
	"syscall"

	"golang.org/x/sys/unix"
)

// MarkConn sets SO_MARK=DaemonMark on the socket fd, so the firewall's
// output chain lets its connections reach guests. It needs CAP_NET_ADMIN,
// which is exactly why the mark proves the socket is the daemon's.
func MarkConn(fd uintptr) error {
	return markFD(fd, DaemonMark)
}

// DialerControl is a net.Dialer.Control func that marks the socket with
// DaemonMark before it connects: the first packet (the SYN) already needs
// the mark.
func DialerControl(network, address string, c syscall.RawConn) error {
	return MarkControl(DaemonMark)(network, address, c)
}

// MarkControl is DialerControl for a FirewallSpec with a custom DaemonMark.
func MarkControl(mark uint32) func(network, address string, c syscall.RawConn) error {
	return func(network, address string, c syscall.RawConn) error {
		var markErr error
		if err := c.Control(func(fd uintptr) { markErr = markFD(fd, mark) }); err != nil {
			return fmt.Errorf("dial %s %s: reach socket to mark it: %w", network, address, err)
		}
		if markErr != nil {
			return fmt.Errorf("dial %s %s: %w", network, address, markErr)
		}
		return nil
	}
}

func markFD(fd uintptr, mark uint32) error {
	if err := unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_MARK, int(mark)); err != nil {
		return fmt.Errorf("set SO_MARK 0x%x (needs CAP_NET_ADMIN): %w", mark, err)
	}
	return nil
}
