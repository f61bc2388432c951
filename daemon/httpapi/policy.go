package httpapi

import (
	"strconv"
	"time"

	"github.com/labvm/labvm/daemon/api"
	"github.com/labvm/labvm/daemon/authz"
	"github.com/labvm/labvm/daemon/errdefs"
	"github.com/labvm/labvm/daemon/policy"
	"github.com/labvm/labvm/daemon/store"
	"github.com/labvm/labvm/vm"
)

// setIdleShutdown sets or clears an instance's idle shutdown: whoever
// may stop it (the route's permission).
func (s *Server) setIdleShutdown(c call) (response, error) {
	var req api.SetIdleShutdownRequest
	if err := decode(c.r, &req); err != nil {
		return response{}, err
	}
	inst, err := s.Lifecycle.SetIdleShutdown(c.inst, req.IdleShutdown)
	if err != nil {
		return response{}, err
	}
	return ok(s.apiInstance(inst)), nil
}

// listSchedules lists every schedule the caller may see: all of them
// with computes/read, else those of their own instances.
func (s *Server) listSchedules(c call) (response, error) {
	list, err := s.Lifecycle.Instances()
	if err != nil {
		return response{}, err
	}
	seeAll := s.Authz.Has(c.c, authz.PermRead)
	byID := map[string]vm.Instance{}
	for _, inst := range list {
		if seeAll || authz.IsOwnUser(c.c, inst) || authz.IsCreator(c.c, inst) {
			byID[inst.ID] = inst
		}
	}
	if !seeAll && len(byID) == 0 {
		return response{}, s.Authz.Authorize(c.c, authz.PermRead)
	}
	scheds, err := s.Policy.Schedules(func(id string) bool { _, ok := byID[id]; return ok })
	if err != nil {
		return response{}, err
	}
	out := make([]api.Schedule, 0, len(scheds))
	for _, sc := range scheds {
		out = append(out, s.apiSchedule(sc, byID[sc.InstanceID].Name))
	}
	return ok(out), nil
}

func (s *Server) instanceSchedules(inst vm.Instance) ([]api.Schedule, error) {
	scheds, err := s.Policy.Schedules(func(id string) bool { return id == inst.ID })
	out := make([]api.Schedule, 0, len(scheds))
	for _, sc := range scheds {
		out = append(out, s.apiSchedule(sc, inst.Name))
	}
	return out, err
}

func (s *Server) getSchedules(c call) (response, error) {
	out, err := s.instanceSchedules(c.inst)
	return ok(out), err
}

// addSchedule: whoever may stop the instance (the route's permission)
// and, for a schedule that starts it, start it.
func (s *Server) addSchedule(c call) (response, error) {
	var req api.CreateScheduleRequest
	if err := decode(c.r, &req); err != nil {
		return response{}, err
	}
	if req.Start != "" {
		if err := s.Authz.AuthorizeInstance(c.c, authz.PermStart, c.inst); err != nil {
			return response{}, err
		}
	}
	sc, err := s.Policy.AddSchedule(c.inst, policy.ScheduleRequest{Stop: req.Stop, Start: req.Start, Timezone: req.Timezone,
		CreatedBy: c.c.Name, CreatedByUID: c.c.UID})
	if err != nil {
		return response{}, err
	}
	return response{201, s.apiSchedule(sc, c.inst.Name)}, nil
}

func (s *Server) removeSchedule(c call) (response, error) {
	id, err := strconv.Atoi(c.r.PathValue("id"))
	if err != nil || id < 1 {
		return response{}, errdefs.Invalidf("schedule id %q: want a number from `labvm schedule list %s`", c.r.PathValue("id"), c.inst.Name)
	}
	if err := s.Policy.RemoveSchedule(c.inst, id); err != nil {
		return response{}, err
	}
	return ok(map[string]string{"result": "schedule " + strconv.Itoa(id) + " of " + c.inst.Name + " removed"}), nil
}

func (s *Server) apiSchedule(sc store.Schedule, instance string) api.Schedule {
	out := api.Schedule{ID: sc.ID, Instance: instance, Stop: sc.Stop, Start: sc.Start, Timezone: sc.Timezone,
		CreatedBy: sc.CreatedBy, CreatedAt: sc.CreatedAt}
	if action, at := s.Policy.NextRun(sc); action != "" {
		out.Next = &api.ScheduleRun{Action: action, At: at}
	}
	if l := sc.Last; l != nil {
		ran := l.RanAt
		out.Last = &api.ScheduleRun{Action: l.Action, At: l.At, RanAt: &ran, Operation: l.Operation, Skipped: l.Skipped, Missed: l.Missed}
	}
	return out
}

// apiIdle is an instance's idle shutdown as the API shows it.
func (s *Server) apiIdle(inst vm.Instance) api.IdleShutdown {
	st := s.Policy.IdleStatus(inst)
	out := api.IdleShutdown{LimitSeconds: int64(st.Limit / time.Second), Watched: st.Watched,
		IdleSeconds: int64(st.IdleFor / time.Second), SessionsOpen: st.Sessions, Jobs: st.Jobs}
	if st.Limit > 0 {
		out.Limit = vm.FormatDuration(st.Limit)
	}
	if !st.LastSession.IsZero() {
		t := st.LastSession.UTC()
		out.LastSessionAt = &t
	}
	if st.CPUKnown {
		cpu := st.CPUPercent
		out.CPUPercent = &cpu
	}
	return out
}
