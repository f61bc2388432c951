// Package images owns the file side of the base-image catalogue: importing
// a cloud image (bytes streamed from a user, or pulled over HTTP from
// anywhere but this host) into a read-only qcow2 named by its own sha256
// under one directory, and removing it again. The records that name and describe
// images live with the daemon; this package only ever sees digests and paths.
package images
