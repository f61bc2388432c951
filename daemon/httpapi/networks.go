package httpapi

import "github.com/labvm/labvm/daemon/api"

func (s *Server) listNetworks(c call) (response, error) {
	out, err := s.VNets.List()
	return ok(out), err
}

func (s *Server) getNetwork(c call) (response, error) {
	out, err := s.VNets.Get(c.r.PathValue("name"))
	return ok(out), err
}

func (s *Server) createNetwork(c call) (response, error) {
	var req api.CreateVNetRequest
	if err := decode(c.r, &req); err != nil {
		return response{}, err
	}
	c.target(req.Name)
	out, err := s.VNets.Create(c.ctx(), c.c.Name, req)
	return ok(out), err
}

func (s *Server) deleteNetwork(c call) (response, error) {
	name := c.r.PathValue("name")
	if err := s.VNets.Delete(c.ctx(), name); err != nil {
		return response{}, err
	}
	return ok(map[string]string{"deleted": name}), nil
}

func (s *Server) addSubnet(c call) (response, error) {
	var req api.CreateSubnetRequest
	if err := decode(c.r, &req); err != nil {
		return response{}, err
	}
	vnet := c.r.PathValue("name")
	c.target(vnet + "/" + req.Name)
	out, err := s.VNets.AddSubnet(c.ctx(), vnet, req)
	return ok(out), err
}

func (s *Server) removeSubnet(c call) (response, error) {
	vnet, subnet := c.r.PathValue("name"), c.r.PathValue("subnet")
	c.target(vnet + "/" + subnet)
	if err := s.VNets.RemoveSubnet(c.ctx(), vnet, subnet); err != nil {
		return response{}, err
	}
	return ok(map[string]string{"deleted": vnet + "/" + subnet}), nil
}
