package client

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strconv"

	"github.com/labvm/labvm/daemon/api"
)

// CopyIn streams body (size bytes, or -1 when unknown) into the instance:
// a file, or with req.Kind dir a tar of a directory.
func (c *Client) CopyIn(ctx context.Context, name string, req api.CopyInRequest, body io.Reader, size int64) (api.CopyResult, error) {
	var out api.CopyResult
	return out, c.upload(ctx, http.MethodPut, "/v1/instances/"+esc(name)+"/files?"+req.Query().Encode(), "application/octet-stream", body, size, "copy into "+name, &out)
}

// CopyOutStream is a copy out in progress: Info, then Body until EOF,
// then Err says whether everything arrived.
type CopyOutStream struct {
	Info api.CopyOutInfo
	resp *http.Response
}

// Read reads the file's bytes (or the directory's tar stream).
func (s *CopyOutStream) Read(p []byte) (int, error) { return s.resp.Body.Read(p) }

// Close ends the stream.
func (s *CopyOutStream) Close() error { return s.resp.Body.Close() }

// Err is the daemon's verdict once Read returned EOF: nil when the copy
// was complete, the error that cut it short otherwise.
func (s *CopyOutStream) Err() error {
	v := s.resp.Trailer.Get(api.TrailerCopyFail)
	if v == "" {
		return nil
	}
	var er api.ErrorResponse
	if json.Unmarshal([]byte(v), &er) != nil || er.Error == nil {
		return &api.Error{Code: api.CodeInternal, Message: "the copy failed: " + v}
	}
	return er.Error
}

// CopyOut starts copying a file or (req.Recursive) a directory out of the
// instance.
func (c *Client) CopyOut(ctx context.Context, name string, req api.CopyOutRequest) (*CopyOutStream, error) {
	resp, err := c.request(ctx, http.MethodGet, "/v1/instances/"+esc(name)+"/files?"+req.Query().Encode(), nil)
	if err != nil {
		return nil, err
	}
	h := resp.Header
	info := api.CopyOutInfo{Kind: api.CopyKind(h.Get(api.HeaderCopyKind)), Path: h.Get(api.HeaderCopyPath), Size: -1}
	if m, err := strconv.ParseUint(h.Get(api.HeaderCopyMode), 8, 32); err == nil {
		info.Mode = uint32(m)
	}
	if n, err := strconv.ParseInt(h.Get(api.HeaderCopySize), 10, 64); err == nil {
		info.Size = n
	}
	if info.Kind != api.CopyFile && info.Kind != api.CopyDir {
		resp.Body.Close()
		return nil, fmt.Errorf("copy out of %s: the daemon sent no %s header", name, api.HeaderCopyKind)
	}
	return &CopyOutStream{Info: info, resp: resp}, nil
}
