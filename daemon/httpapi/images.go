package httpapi

import "github.com/labvm/labvm/daemon/api"

func (s *Server) listImages(c call) (response, error) {
	out, err := s.Library.List()
	return ok(out), err
}

func (s *Server) getImage(c call) (response, error) {
	out, err := s.Library.Get(c.r.PathValue("name"))
	return ok(out), err
}

func (s *Server) importImage(c call) (response, error) {
	var req api.ImportImageRequest
	if err := decode(c.r, &req); err != nil {
		return response{}, err
	}
	c.target(req.Name)
	return opResponse(s.Library.Import(c.c, req))
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
