package httpapi

import "github.com/labvm/labvm/daemon/api"

func (s *Server) getDoctor(c call) (response, error) {
	out, err := s.Doctor.Examine(c.ctx())
	return ok(out), err
}

func (s *Server) runDoctor(c call) (response, error) {
	var req api.DoctorRequest
	if err := decode(c.r, &req); err != nil {
		return response{}, err
	}
	c.target("doctor")
	out, err := s.Doctor.Run(c.ctx(), c.c.Name, req)
	return ok(out), err
}
