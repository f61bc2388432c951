package storage

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"path/filepath"
)

// DefaultDiskSize is the virtual size of an instance disk when the user does
// not ask for one. Overlays are thin, so this costs nothing until written.
const DefaultDiskSize int64 = 120 << 30

// qcow2 layout constants. The layout mirrors what `qemu-img create` writes
// (header, refcount table, refcount block, L1) so that qemu's own tooling
// sees nothing unusual in our overlays.
const (
	qcow2Magic         = 0x514649fb // "QFI\xfb"
	qcow2Version       = 3
	qcow2ClusterBits   = 16
	qcow2ClusterSize   = 1 << qcow2ClusterBits
	qcow2HeaderLength  = 104
	qcow2RefcountOrder = 4 // 16-bit refcounts, qemu's default
	// One L2 table holds clusterSize/8 entries, each mapping one cluster.
	qcow2BytesPerL2 = (qcow2ClusterSize / 8) * qcow2ClusterSize
	// qemu refuses L1 tables above 32 MiB (QCOW_MAX_L1_SIZE); staying under it
	// also keeps every metadata cluster inside the single refcount block.
	qcow2MaxL1Bytes = 32 << 20
	// QEMU caps backing file names at 1023 bytes.
	qcow2MaxBackingName = 1023

	qcow2ExtEnd           = 0x00000000
	qcow2ExtBackingFormat = 0xe2792aca

	qcow2RefcountTableCluster = 1
	qcow2RefcountBlockCluster = 2
	qcow2L1Cluster            = 3
)

// OverlayOptions describes a copy-on-write disk layered on a base image.
type OverlayOptions struct {
	// Path is where the overlay is created; it must not exist yet.
	Path string
	// BackingFile is the absolute path of the base image. It is stored
	// verbatim in the overlay, so a relative path would resolve against
	// whatever directory QEMU happens to look from.
	BackingFile string
	// BackingFormat is "qcow2" or "raw". Recording it stops QEMU from probing
	// the base, which is both slower and unsafe for raw images.
	BackingFormat string
	// Size is the virtual size in bytes; it is rounded up to whole 512-byte
	// sectors, as qemu-img does, because a block device has no partial sectors.
	Size int64
}

// CreateOverlay writes a thin qcow2 (version 3) overlay backed by
// opts.BackingFile. It is written directly rather than via qemu-img because
// it sits on the hot path of instance creation and a subprocess costs more
// than the file itself. An existing file is never overwritten: the error then
// wraps fs.ErrExist. On any failure no partial file is left behind.
func CreateOverlay(ctx context.Context, opts OverlayOptions) (err error) {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("create overlay %s: %w", opts.Path, err)
	}
	img, err := buildQcow2Overlay(opts)
	if err != nil {
		return fmt.Errorf("create overlay %s: %w", opts.Path, err)
	}
	if _, err := os.Stat(opts.BackingFile); err != nil {
		return fmt.Errorf("create overlay %s: backing file: %w", opts.Path, err)
	}

	f, err := os.OpenFile(opts.Path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, PrivateFileMode)
	if err != nil {
		return fmt.Errorf("create overlay %s: %w", opts.Path, err)
	}
	defer func() {
		if err != nil {
			_ = f.Close()
			_ = os.Remove(opts.Path) // best effort: err is what the caller needs
		}
	}()

	for _, c := range img.chunks {
		if _, err := f.WriteAt(c.data, c.offset); err != nil {
			return fmt.Errorf("create overlay %s: %w", opts.Path, err)
		}
	}
	// Truncate instead of writing the zero-filled L1 so the file stays
	// sparse: a fresh overlay must cost a few KiB of host disk, not the
	// whole metadata area.
	if err := f.Truncate(img.fileSize); err != nil {
		return fmt.Errorf("create overlay %s: %w", opts.Path, err)
	}
	if err := f.Sync(); err != nil {
		return fmt.Errorf("create overlay %s: sync: %w", opts.Path, err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("create overlay %s: close: %w", opts.Path, err)
	}
	// The instance record will point at this file; its directory entry must
	// survive a crash as surely as its contents.
	if err := syncDir(filepath.Dir(opts.Path)); err != nil {
		return fmt.Errorf("create overlay %s: %w", opts.Path, err)
	}
	return nil
}

type chunk struct {
	offset int64
	data   []byte
}

// qcow2Image is an overlay as a list of non-zero regions plus a length;
// everything not covered by a chunk reads as zero.
type qcow2Image struct {
	chunks   []chunk
	fileSize int64
}

func buildQcow2Overlay(opts OverlayOptions) (qcow2Image, error) {
	if opts.Path == "" {
		return qcow2Image{}, errors.New("overlay path is empty")
	}
	if !filepath.IsAbs(opts.BackingFile) {
		return qcow2Image{}, fmt.Errorf("backing file %q must be an absolute path", opts.BackingFile)
	}
	if len(opts.BackingFile) > qcow2MaxBackingName {
		return qcow2Image{}, fmt.Errorf("backing file path is %d bytes, qcow2 allows at most %d", len(opts.BackingFile), qcow2MaxBackingName)
	}
	switch opts.BackingFormat {
	case "qcow2", "raw":
	default:
		return qcow2Image{}, fmt.Errorf("backing format %q: want qcow2 or raw", opts.BackingFormat)
	}
	if opts.Size <= 0 {
		return qcow2Image{}, fmt.Errorf("virtual size %d: must be positive", opts.Size)
	}
	size := opts.Size
	if rem := size % 512; rem != 0 {
		size += 512 - rem
	}
	if size <= 0 {
		return qcow2Image{}, fmt.Errorf("virtual size %d: too large", opts.Size)
	}

	l1Entries := (size + qcow2BytesPerL2 - 1) / qcow2BytesPerL2
	l1Bytes := l1Entries * 8
	if l1Bytes > qcow2MaxL1Bytes {
		return qcow2Image{}, fmt.Errorf("virtual size %d: larger than qcow2 with 64 KiB clusters supports", opts.Size)
	}
	l1Clusters := (l1Bytes + qcow2ClusterSize - 1) / qcow2ClusterSize
	totalClusters := qcow2L1Cluster + l1Clusters

	header := make([]byte, 0, 512)
	be := binary.BigEndian
	header = be.AppendUint32(header, qcow2Magic)
	header = be.AppendUint32(header, qcow2Version)
	header = be.AppendUint64(header, 0) // backing_file_offset, patched below
	header = be.AppendUint32(header, uint32(len(opts.BackingFile)))
	header = be.AppendUint32(header, qcow2ClusterBits)
	header = be.AppendUint64(header, uint64(size))
	header = be.AppendUint32(header, 0) // crypt_method
	header = be.AppendUint32(header, uint32(l1Entries))
	header = be.AppendUint64(header, qcow2L1Cluster*qcow2ClusterSize)
	header = be.AppendUint64(header, qcow2RefcountTableCluster*qcow2ClusterSize)
	header = be.AppendUint32(header, 1) // refcount_table_clusters
	header = be.AppendUint32(header, 0) // nb_snapshots
	header = be.AppendUint64(header, 0) // snapshots_offset
	header = be.AppendUint64(header, 0) // incompatible_features
	header = be.AppendUint64(header, 0) // compatible_features
	header = be.AppendUint64(header, 0) // autoclear_features
	header = be.AppendUint32(header, qcow2RefcountOrder)
	header = be.AppendUint32(header, qcow2HeaderLength)

	header = appendHeaderExt(header, qcow2ExtBackingFormat, []byte(opts.BackingFormat))
	header = appendHeaderExt(header, qcow2ExtEnd, nil)

	be.PutUint64(header[8:], uint64(len(header)))
	header = append(header, opts.BackingFile...)

	refTable := be.AppendUint64(nil, qcow2RefcountBlockCluster*qcow2ClusterSize)
	refBlock := make([]byte, 0, totalClusters*2)
	for range totalClusters {
		refBlock = be.AppendUint16(refBlock, 1)
	}

	return qcow2Image{
		chunks: []chunk{
			{offset: 0, data: header},
			{offset: qcow2RefcountTableCluster * qcow2ClusterSize, data: refTable},
			{offset: qcow2RefcountBlockCluster * qcow2ClusterSize, data: refBlock},
		},
		fileSize: totalClusters * qcow2ClusterSize,
	}, nil
}

// appendHeaderExt appends one qcow2 header extension; the spec pads each
// extension's data to a multiple of 8 bytes.
func appendHeaderExt(b []byte, typ uint32, data []byte) []byte {
	b = binary.BigEndian.AppendUint32(b, typ)
	b = binary.BigEndian.AppendUint32(b, uint32(len(data)))
	b = append(b, data...)
	pad := (8 - len(data)%8) % 8
	return append(b, make([]byte, pad)...)
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("sync dir %s: %w", dir, err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("sync dir %s: %w", dir, err)
	}
	return nil
}
