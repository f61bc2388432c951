package lifecycle

import (
	"sort"

	"github.com/labvm/labvm/daemon/api"
	"github.com/labvm/labvm/daemon/errdefs"
	"github.com/labvm/labvm/daemon/store"
	"github.com/labvm/labvm/vm"
)

// QuotaConfig are the configured core limits; owners can change them,
// and the stored values then win.
type QuotaConfig struct {
	Total    int
	Families map[string]int
}

func (e *Engine) quotaLimits(tx *store.Tx) (store.QuotaLimits, error) {
	q, set, err := tx.QuotaLimits()
	if err != nil || set {
		return q, err
	}
	fams := map[string]int{}
	for k, v := range e.cfg.Quota.Families {
		fams[k] = v
	}
	return store.QuotaLimits{Total: e.cfg.Quota.Total, Families: fams}, nil
}

// coresUsed counts every instance's cores, whatever its state: cores are
// taken at create and given back only at delete, so a stopped instance
// can always start again.
func coresUsed(list []vm.Instance) (total int, byFamily map[string]int) {
	byFamily = map[string]int{}
	for _, inst := range list {
		total += inst.Size.VCPUs
		byFamily[inst.Size.Family] += inst.Size.VCPUs
	}
	return total, byFamily
}

// checkQuota runs inside the create transaction, so two concurrent
// creates are serialised by bbolt and cannot both take the last cores.
func (e *Engine) checkQuota(tx *store.Tx, size vm.Size) error {
	limits, err := e.quotaLimits(tx)
	if err != nil {
		return err
	}
	// With no limit that applies there is nothing to count; counting
	// decodes every instance, inside the write transaction every create
	// waits for.
	if limits.Total <= 0 && limits.Families[size.Family] <= 0 {
		return nil
	}
	list, err := tx.Instances()
	if err != nil {
		return err
	}
	total, fam := coresUsed(list)
	if l := limits.Families[size.Family]; l > 0 && fam[size.Family]+size.VCPUs > l {
		return errdefs.New(errdefs.ErrQuotaExceeded, "delete an instance of that family (stopping does not free cores), pick a smaller size, or ask an owner to raise the limit", "quota of family %s exceeded: %d of %d cores used, %s needs %d", size.Family, fam[size.Family], l, size.Name, size.VCPUs)
	}
	if limits.Total > 0 && total+size.VCPUs > limits.Total {
		return errdefs.New(errdefs.ErrQuotaExceeded, "delete an instance (stopping does not free cores), or ask an owner to raise the limit", "host core quota exceeded: %d of %d cores used, %s needs %d", total, limits.Total, size.Name, size.VCPUs)
	}
	return nil
}

// Quota is the core quota: limits and what is used.
func (e *Engine) Quota() (api.Quota, error) {
	var out api.Quota
	err := e.store.View(func(tx *store.Tx) error {
		var err error
		out, err = e.quotaView(tx)
		return err
	})
	return out, err
}

func (e *Engine) quotaView(tx *store.Tx) (api.Quota, error) {
	limits, err := e.quotaLimits(tx)
	if err != nil {
		return api.Quota{}, err
	}
	list, err := tx.Instances()
	if err != nil {
		return api.Quota{}, err
	}
	total, fam := coresUsed(list)
	names := map[string]bool{}
	for _, s := range e.sizes.List() {
		names[s.Family] = true
	}
	for f := range limits.Families {
		names[f] = true
	}
	for f := range fam {
		names[f] = true
	}
	out := api.Quota{Total: api.QuotaLine{Used: total, Limit: limits.Total}, Families: []api.QuotaLine{}}
	for f := range names {
		out.Families = append(out.Families, api.QuotaLine{Family: f, Used: fam[f], Limit: limits.Families[f]})
	}
	sort.Slice(out.Families, func(i, j int) bool { return out.Families[i].Family < out.Families[j].Family })
	return out, nil
}

// SetQuota sets the core limit of a family, or the total with family "".
func (e *Engine) SetQuota(req api.SetQuotaRequest) (api.Quota, error) {
	if req.Limit < 0 || req.Limit > 1<<20 {
		return api.Quota{}, errdefs.Invalidf("limit %d: want 0 (no limit) or a positive number of cores", req.Limit)
	}
	if req.Family != "" {
		known := false
		for _, s := range e.sizes.List() {
			known = known || s.Family == req.Family
		}
		if !known {
			return api.Quota{}, errdefs.Invalidf("unknown VM family %q; `labvm sizes` shows the families", req.Family)
		}
	}
	var out api.Quota
	err := e.store.Update(func(tx *store.Tx) error {
		limits, err := e.quotaLimits(tx)
		if err != nil {
			return err
		}
		list, err := tx.Instances()
		if err != nil {
			return err
		}
		total, fam := coresUsed(list)
		used := total
		if req.Family != "" {
			used = fam[req.Family]
		}
		if req.Limit > 0 && req.Limit < used {
			return errdefs.Invalidf("limit %d is below the %d cores already used; delete instances first", req.Limit, used)
		}
		if limits.Families == nil {
			limits.Families = map[string]int{}
		}
		if req.Family == "" {
			limits.Total = req.Limit
		} else if req.Limit == 0 {
			delete(limits.Families, req.Family)
		} else {
			limits.Families[req.Family] = req.Limit
		}
		if err := tx.PutQuotaLimits(limits); err != nil {
			return err
		}
		out, err = e.quotaView(tx)
		return err
	})
	return out, err
}
