// Package images owns the file side of the base-image catalogue: importing
// a user's cloud image into a content-addressed, read-only qcow2 under one
// directory, and removing it again. The records that name and describe
// images live with the daemon; this package only ever sees digests and paths.
package images
