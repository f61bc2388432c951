package storage

import (
	"encoding/binary"
	"fmt"
	"slices"
	"strings"
	"time"
	"unicode/utf16"
)

// This file writes a minimal single-directory ISO9660 image with a Joliet
// supplementary volume descriptor. Joliet is what makes Linux (and so
// cloud-init) see "meta-data" and "network-config" verbatim: plain ISO9660
// names are limited to upper-case 8.3, and github.com/kdomanski/iso9660
// mangles "meta-data" into "meta_data;1" with no Rock Ridge or Joliet to
// carry the real name.
//
// Layout, in 2048-byte sectors:
//
//	0-15  system area (zero)
//	16    primary volume descriptor
//	17    Joliet supplementary volume descriptor
//	18    volume descriptor set terminator
//	19-22 path tables: primary L, primary M, Joliet L, Joliet M
//	23    primary root directory
//	24    Joliet root directory
//	25-   file data, shared by both directory trees

const (
	isoSectorSize   = 2048
	isoSectorPVD    = 16
	isoSectorSVD    = 17
	isoSectorTerm   = 18
	isoSectorPathL  = 19
	isoSectorPathM  = 20
	isoSectorJPathL = 21
	isoSectorJPathM = 22
	isoSectorRoot   = 23
	isoSectorJRoot  = 24
	isoSectorData   = 25

	// A root-only path table is one 10-byte record.
	isoPathTableSize = 10
	// Joliet names are limited to 64 UCS-2 characters.
	jolietMaxName = 64
)

type isoFile struct {
	name string
	data []byte
}

type isoEntry struct {
	id     []byte // identifier as recorded in the directory
	sector uint32
	size   uint32
}

// buildISO returns an ISO9660+Joliet image holding files in its root
// directory. The whole image is built in memory: seeds are a few KiB.
func buildISO(label string, files []isoFile, mtime time.Time) ([]byte, error) {
	if len(label) == 0 || len(label) > 16 {
		return nil, fmt.Errorf("volume label %q: want 1 to 16 characters", label)
	}
	sector := uint32(isoSectorData)
	var primary, joliet []isoEntry
	var starts []uint32 // data sector of files[i]
	seen := map[string]bool{}
	for _, f := range files {
		if f.name == "" || len(f.name) > jolietMaxName || strings.ContainsAny(f.name, "/;\x00") {
			return nil, fmt.Errorf("file name %q cannot be stored in a Joliet directory", f.name)
		}
		short := isoShortName(f.name)
		if seen[short] {
			return nil, fmt.Errorf("file name %q collides with another after ISO9660 mangling", f.name)
		}
		seen[short] = true
		if int64(len(f.data)) > int64(^uint32(0)) {
			return nil, fmt.Errorf("file %q is too large for ISO9660", f.name)
		}
		size := uint32(len(f.data))
		starts = append(starts, sector)
		primary = append(primary, isoEntry{id: []byte(short), sector: sector, size: size})
		joliet = append(joliet, isoEntry{id: ucs2(f.name), sector: sector, size: size})
		sector += sectorsFor(len(f.data))
	}
	totalSectors := sector

	// ECMA-119 9.3 requires directory records sorted by identifier.
	sortEntries := func(es []isoEntry) {
		slices.SortFunc(es, func(a, b isoEntry) int { return strings.Compare(string(a.id), string(b.id)) })
	}
	sortEntries(primary)
	sortEntries(joliet)

	img := make([]byte, int(totalSectors)*isoSectorSize)
	at := func(s uint32) []byte { return img[int(s)*isoSectorSize : int(s+1)*isoSectorSize] }

	rootP, err := dirSector(isoSectorRoot, primary, mtime)
	if err != nil {
		return nil, err
	}
	rootJ, err := dirSector(isoSectorJRoot, joliet, mtime)
	if err != nil {
		return nil, err
	}
	copy(at(isoSectorRoot), rootP)
	copy(at(isoSectorJRoot), rootJ)

	writeVolumeDescriptor(at(isoSectorPVD), volumeDescriptor{
		typ: 1, label: label, totalSectors: totalSectors, mtime: mtime,
		pathL: isoSectorPathL, pathM: isoSectorPathM, root: isoSectorRoot,
	})
	writeVolumeDescriptor(at(isoSectorSVD), volumeDescriptor{
		typ: 2, joliet: true, label: label, totalSectors: totalSectors, mtime: mtime,
		pathL: isoSectorJPathL, pathM: isoSectorJPathM, root: isoSectorJRoot,
	})
	term := at(isoSectorTerm)
	term[0] = 255
	copy(term[1:6], "CD001")
	term[6] = 1

	writePathTable(at(isoSectorPathL), binary.LittleEndian, isoSectorRoot)
	writePathTable(at(isoSectorPathM), binary.BigEndian, isoSectorRoot)
	writePathTable(at(isoSectorJPathL), binary.LittleEndian, isoSectorJRoot)
	writePathTable(at(isoSectorJPathM), binary.BigEndian, isoSectorJRoot)

	for i, f := range files {
		copy(img[int(starts[i])*isoSectorSize:], f.data)
	}
	return img, nil
}

func sectorsFor(n int) uint32 {
	return uint32((n + isoSectorSize - 1) / isoSectorSize)
}

// isoShortName maps a name onto the strict level-1 form (upper-case 8.3 of
// d-characters) that every ISO9660 reader accepts; readers that understand
// Joliet never look at it.
func isoShortName(name string) string {
	base, ext, _ := strings.Cut(name, ".")
	clean := func(s string, n int) string {
		var b strings.Builder
		for _, r := range strings.ToUpper(s) {
			if b.Len() == n {
				break
			}
			if r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' {
				b.WriteRune(r)
			} else {
				b.WriteByte('_')
			}
		}
		return b.String()
	}
	return clean(base, 8) + "." + clean(ext, 3) + ";1"
}

func ucs2(s string) []byte {
	u := utf16.Encode([]rune(s))
	b := make([]byte, 0, 2*len(u))
	for _, c := range u {
		b = binary.BigEndian.AppendUint16(b, c)
	}
	return b
}

type volumeDescriptor struct {
	typ          byte
	joliet       bool
	label        string
	totalSectors uint32
	mtime        time.Time
	pathL, pathM uint32
	root         uint32
}

// writeVolumeDescriptor fills one primary (ECMA-119 8.4) or Joliet
// supplementary (8.5) volume descriptor.
func writeVolumeDescriptor(b []byte, vd volumeDescriptor) {
	b[0] = vd.typ
	copy(b[1:6], "CD001")
	b[6] = 1
	text := func(field []byte, s string) {
		if vd.joliet {
			fillUCS2(field, s)
			return
		}
		for i := range field {
			field[i] = ' '
		}
		copy(field, s)
	}
	text(b[8:40], "LINUX")
	text(b[40:72], vd.label)
	putBoth32(b[80:88], vd.totalSectors)
	if vd.joliet {
		// UCS-2 level 3 escape sequence: this is what marks the SVD as Joliet.
		copy(b[88:91], "%/E")
	}
	putBoth16(b[120:124], 1) // volume set size
	putBoth16(b[124:128], 1) // volume sequence number
	putBoth16(b[128:132], isoSectorSize)
	putBoth32(b[132:140], isoPathTableSize)
	binary.LittleEndian.PutUint32(b[140:144], vd.pathL)
	binary.BigEndian.PutUint32(b[148:152], vd.pathM)
	copy(b[156:190], dirRecord(vd.root, isoSectorSize, true, []byte{0}, vd.mtime))
	text(b[190:318], "")      // volume set
	text(b[318:446], "")      // publisher
	text(b[446:574], "")      // data preparer
	text(b[574:702], "LABVM") // application
	text(b[702:739], "")      // copyright file
	text(b[739:776], "")      // abstract file
	text(b[776:813], "")      // bibliographic file
	ts := decDateTime(vd.mtime)
	copy(b[813:830], ts) // creation
	copy(b[830:847], ts) // modification
	copy(b[847:864], decDateTime(time.Time{}))
	copy(b[864:881], ts) // effective
	b[881] = 1           // file structure version
}

// fillUCS2 pads with UCS-2 spaces, as Joliet expects of text fields.
func fillUCS2(field []byte, s string) {
	for i := 0; i+1 < len(field); i += 2 {
		field[i], field[i+1] = 0, ' '
	}
	u := ucs2(s)
	copy(field, u[:min(len(u), len(field)&^1)])
}

func writePathTable(b []byte, order binary.ByteOrder, rootSector uint32) {
	b[0] = 1 // identifier length: the root's identifier is one zero byte
	order.PutUint32(b[2:6], rootSector)
	order.PutUint16(b[6:8], 1) // the root is its own parent
}

// dirSector renders a one-sector directory: ".", "..", then entries.
func dirSector(self uint32, entries []isoEntry, mtime time.Time) ([]byte, error) {
	b := make([]byte, 0, isoSectorSize)
	b = append(b, dirRecord(self, isoSectorSize, true, []byte{0}, mtime)...)
	b = append(b, dirRecord(self, isoSectorSize, true, []byte{1}, mtime)...)
	for _, e := range entries {
		b = append(b, dirRecord(e.sector, e.size, false, e.id, mtime)...)
	}
	if len(b) > isoSectorSize {
		return nil, fmt.Errorf("too many files for a one-sector ISO9660 directory")
	}
	return b, nil
}

// dirRecord renders one directory record (ECMA-119 9.1).
func dirRecord(sector, size uint32, dir bool, id []byte, mtime time.Time) []byte {
	n := 33 + len(id)
	if n%2 != 0 {
		n++
	}
	r := make([]byte, n)
	r[0] = byte(n)
	putBoth32(r[2:10], sector)
	putBoth32(r[10:18], size)
	t := mtime.UTC()
	r[18] = byte(t.Year() - 1900)
	r[19] = byte(t.Month())
	r[20] = byte(t.Day())
	r[21] = byte(t.Hour())
	r[22] = byte(t.Minute())
	r[23] = byte(t.Second())
	if dir {
		r[25] = 2
	}
	putBoth16(r[28:32], 1)
	r[32] = byte(len(id))
	copy(r[33:], id)
	return r
}

// decDateTime renders the 17-byte volume descriptor timestamp (8.4.26.1);
// the zero time renders as "not specified".
func decDateTime(t time.Time) []byte {
	if t.IsZero() {
		return append([]byte(strings.Repeat("0", 16)), 0)
	}
	s := t.UTC().Format("20060102150405") + fmt.Sprintf("%02d", t.UTC().Nanosecond()/1e7)
	return append([]byte(s), 0)
}

func putBoth16(b []byte, v uint16) {
	binary.LittleEndian.PutUint16(b[0:2], v)
	binary.BigEndian.PutUint16(b[2:4], v)
}

func putBoth32(b []byte, v uint32) {
	binary.LittleEndian.PutUint32(b[0:4], v)
	binary.BigEndian.PutUint32(b[4:8], v)
}
