package api

import "time"

// Dataset is a host directory owners declared, which instances created
// with it see read-only at /datasets/NAME.
type Dataset struct {
	Name string `json:"name"`
	// Path is the host directory.
	Path      string    `json:"path"`
	CreatedBy string    `json:"created_by"`
	CreatedAt time.Time `json:"created_at"`
	// UsedBy names the instances (in any state) created with it.
	UsedBy []string `json:"used_by"`
}

// AddDatasetRequest declares a dataset.
type AddDatasetRequest struct {
	Name string `json:"name"`
	// Path is an absolute directory on the daemon's host.
	Path string `json:"path"`
}
