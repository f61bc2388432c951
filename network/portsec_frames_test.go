package network

import (
	"bytes"
	"encoding/binary"
	"net"
	"net/netip"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// Hand-made Ethernet frames for the port security lab: a hostile guest
// writes whatever bytes it likes to its NIC, and so do these tests,
// through AF_PACKET sockets in the guest's namespace. Each frame carries
// a marker so a capture can count exactly the frames of one attack.

var broadcastMAC = net.HardwareAddr{0xff, 0xff, 0xff, 0xff, 0xff, 0xff}

func mustMAC(s string) net.HardwareAddr {
	hw, err := net.ParseMAC(s)
	if err != nil {
		panic(err)
	}
	return hw
}

// ethFrame is an Ethernet frame padded to the 60-byte minimum.
func ethFrame(dst, src net.HardwareAddr, etherType uint16, payload []byte) []byte {
	f := append(append(append([]byte{}, dst...), src...), byte(etherType>>8), byte(etherType))
	f = append(f, payload...)
	for len(f) < 60 {
		f = append(f, 0)
	}
	return f
}

// vlanFrame is ethFrame with an 802.1Q tag.
func vlanFrame(dst, src net.HardwareAddr, vid, etherType uint16, payload []byte) []byte {
	inner := append([]byte{byte(vid >> 8), byte(vid), byte(etherType >> 8), byte(etherType)}, payload...)
	return ethFrame(dst, src, 0x8100, inner)
}

// ipv4 is an IPv4 packet of protocol proto.
func ipv4(src, dst netip.Addr, proto byte, payload []byte) []byte {
	h := make([]byte, 20)
	h[0], h[8], h[9] = 0x45, 64, proto
	binary.BigEndian.PutUint16(h[2:], uint16(20+len(payload)))
	s, d := src.As4(), dst.As4()
	copy(h[12:], s[:])
	copy(h[16:], d[:])
	var sum uint32
	for i := 0; i < 20; i += 2 {
		sum += uint32(binary.BigEndian.Uint16(h[i:]))
	}
	for sum > 0xffff {
		sum = sum>>16 + sum&0xffff
	}
	binary.BigEndian.PutUint16(h[10:], ^uint16(sum))
	return append(h, payload...)
}

// udp is a UDP datagram without checksum (allowed over IPv4).
func udp(sport, dport uint16, payload []byte) []byte {
	h := make([]byte, 8)
	binary.BigEndian.PutUint16(h[0:], sport)
	binary.BigEndian.PutUint16(h[2:], dport)
	binary.BigEndian.PutUint16(h[4:], uint16(8+len(payload)))
	return append(h, payload...)
}

// icmpRedirect tells the receiver to route to "to" through gw.
func icmpRedirect(gw netip.Addr, payload []byte) []byte {
	g := gw.As4()
	return append([]byte{5, 1, 0, 0, g[0], g[1], g[2], g[3]}, payload...)
}

// ipv6UDP is an IPv6 UDP packet (checksum left zero: only its arrival is
// counted).
func ipv6UDP(src, dst netip.Addr, payload []byte) []byte {
	h := make([]byte, 40)
	h[0], h[6], h[7] = 0x60, 17, 255
	binary.BigEndian.PutUint16(h[4:], uint16(8+len(payload)))
	s, d := src.As16(), dst.As16()
	copy(h[8:], s[:])
	copy(h[24:], d[:])
	return append(h, udp(5353, 5353, payload)...)
}

// arp is an Ethernet/IPv4 ARP packet (op 1 request, 2 reply).
func arp(op uint16, sha net.HardwareAddr, spa netip.Addr, tha net.HardwareAddr, tpa netip.Addr) []byte {
	p := []byte{0, 1, 8, 0, 6, 4, byte(op >> 8), byte(op)}
	s, t := spa.As4(), tpa.As4()
	p = append(append(p, sha...), s[:]...)
	return append(append(p, tha...), t[:]...)
}

// sendFrames writes every frame n times to eth0 in the namespace ns.
func sendFrames(t *testing.T, ns string, n int, frames ...[]byte) {
	t.Helper()
	err := inNetns(ns, func() error {
		fd, err := unix.Socket(unix.AF_PACKET, unix.SOCK_RAW, 0)
		if err != nil {
			return err
		}
		defer func() { _ = unix.Close(fd) }()
		ifi, err := net.InterfaceByName("eth0")
		if err != nil {
			return err
		}
		to := &unix.SockaddrLinklayer{Ifindex: ifi.Index}
		for range n {
			for _, f := range frames {
				if err := unix.Sendto(fd, f, 0, to); err != nil {
					return err
				}
			}
		}
		return nil
	})
	if err != nil {
		t.Fatalf("send frames from %s: %v", ns, err)
	}
}

// capture records the frames an interface receives (not those it sends).
type capture struct {
	fd   int
	done chan struct{}

	mu     sync.Mutex
	frames [][]byte
}

func htons(v uint16) uint16 { return v<<8 | v>>8 }

// startCapture listens on ifname in ns until the test ends. Bound to a
// bridge device it sees what the bridge hands to the host's stack.
func startCapture(t *testing.T, ns, ifname string) *capture {
	t.Helper()
	c := &capture{done: make(chan struct{})}
	err := inNetns(ns, func() error {
		fd, err := unix.Socket(unix.AF_PACKET, unix.SOCK_RAW, int(htons(unix.ETH_P_ALL)))
		if err != nil {
			return err
		}
		c.fd = fd
		ifi, err := net.InterfaceByName(ifname)
		if err != nil {
			return err
		}
		if err := unix.Bind(fd, &unix.SockaddrLinklayer{Protocol: htons(unix.ETH_P_ALL), Ifindex: ifi.Index}); err != nil {
			return err
		}
		return unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &unix.Timeval{Usec: 50000})
	})
	if err != nil {
		if c.fd != 0 {
			_ = unix.Close(c.fd)
		}
		t.Fatalf("capture on %s in %s: %v", ifname, ns, err)
	}
	stopped := make(chan struct{})
	go func() {
		defer close(stopped)
		buf := make([]byte, 4096)
		for {
			select {
			case <-c.done:
				return
			default:
			}
			n, from, err := unix.Recvfrom(c.fd, buf, 0)
			if err != nil {
				continue
			}
			if ll, ok := from.(*unix.SockaddrLinklayer); ok && ll.Pkttype == unix.PACKET_OUTGOING {
				continue
			}
			c.mu.Lock()
			c.frames = append(c.frames, bytes.Clone(buf[:n]))
			c.mu.Unlock()
		}
	}()
	t.Cleanup(func() {
		close(c.done)
		<-stopped
		_ = unix.Close(c.fd)
	})
	return c
}

// count is how many received frames carry marker, after letting frames
// in flight arrive.
func (c *capture) count(marker []byte) int {
	time.Sleep(200 * time.Millisecond)
	c.mu.Lock()
	defer c.mu.Unlock()
	n := 0
	for _, f := range c.frames {
		if bytes.Contains(f, marker) {
			n++
		}
	}
	return n
}
