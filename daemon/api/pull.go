package api

// PullImageRequest downloads an image over HTTP(S) into the catalogue.
// At most one of SHA256 and ChecksumsURL may be given; ChecksumsURL names
// a SHA256SUMS file listing the URL's file name.
type PullImageRequest struct {
	Name         string `json:"name"`
	URL          string `json:"url"`
	SHA256       string `json:"sha256,omitempty"`
	ChecksumsURL string `json:"checksums_url,omitempty"`
}
