package guest

import "path"

// DatasetsDir is where the guest sees the instance's datasets.
const DatasetsDir = "/datasets"

// DatasetDir is where the guest mounts the dataset named name (a name
// vm.ValidateNameOf accepted: no slash, no dot-dot).
func DatasetDir(name string) string { return path.Join(DatasetsDir, name) }

// MountDatasetCommand is the shell line that mounts a dataset shared over
// virtiofs under tag at DatasetDir(name), read-only, without setuid or
// device files; it does nothing when already mounted, so it can run at
// every boot (cloud-init's bootcmd). name and tag must be shell-safe
// (dataset names are [a-z0-9-]).
func MountDatasetCommand(name, tag string) string {
	dir := DatasetDir(name)
	return "mkdir -p " + dir + " && { grep -qs ' " + dir + " virtiofs ' /proc/mounts || " +
		"mount -t virtiofs -o ro,nosuid,nodev " + tag + " " + dir + " || " +
		"{ echo 'labvm: cannot mount dataset " + name + " (virtiofs tag " + tag + ") at " + dir + "' >&2; exit 1; }; }"
}
