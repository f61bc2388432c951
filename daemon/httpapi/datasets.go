package httpapi

import "github.com/labvm/labvm/daemon/api"

func (s *Server) listDatasets(c call) (response, error) {
	out, err := s.Datasets.List()
	return ok(out), err
}

func (s *Server) addDataset(c call) (response, error) {
	var req api.AddDatasetRequest
	if err := decode(c.r, &req); err != nil {
		return response{}, err
	}
	c.target(req.Name)
	out, err := s.Datasets.Add(c.c.Name, req)
	return ok(out), err
}

func (s *Server) removeDataset(c call) (response, error) {
	name := c.r.PathValue("name")
	if err := s.Datasets.Remove(name); err != nil {
		return response{}, err
	}
	return ok(map[string]string{"removed": name}), nil
}
