package httpapi

import (
	"github.com/labvm/labvm/daemon/api"
	"github.com/labvm/labvm/daemon/errdefs"
)

func (s *Server) listImages(c call) (response, error) {
	out, err := s.Library.List()
	return ok(out), err
}

func (s *Server) getImage(c call) (response, error) {
	out, err := s.Library.Get(c.r.PathValue("name"))
	return ok(out), err
}

// importImage receives an image as the request body: the CLI opens the
// file as the user and streams it, so the daemon never opens a path on
// anyone's behalf.
func (s *Server) importImage(c call) (response, error) {
	if ct := c.r.Header.Get("Content-Type"); ct != api.ImportContentType {
		return response{}, errdefs.Invalidf("send the image itself as the request body, Content-Type %s (got %q); the daemon does not read files by path", api.ImportContentType, ct)
	}
	req, err := api.ParseImportQuery(c.r.URL.Query())
	if err != nil {
		return response{}, errdefs.Invalidf("%v", err)
	}
	c.target(req.Name)
	return opResponse(s.Library.Import(c.ctx(), c.c, req, c.r.Body, c.r.ContentLength))
}

func (s *Server) pullImage(c call) (response, error) {
	var req api.PullImageRequest
	if err := decode(c.r, &req); err != nil {
		return response{}, err
	}
	c.target(req.Name)
	return opResponse(s.Library.Pull(c.c, req))
}

func (s *Server) deleteImage(c call) (response, error) {
	name := c.r.PathValue("name")
	if err := s.Library.Delete(name); err != nil {
		return response{}, err
	}
	return ok(map[string]string{"deleted": name}), nil
}
