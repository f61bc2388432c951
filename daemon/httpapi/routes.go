package httpapi

import "github.com/labvm/labvm/daemon/authz"

// routes is the whole API, in one table: pattern, the permission the
// server checks before the handler runs, what it is checked on, and the
// name mutating calls carry in the audit log. docs/API.md is checked
// against this table by a test.
func (s *Server) routes() []route {
	const (
		host = scopeHost
		inst = scopeInstance
	)
	return []route{
		{pattern: "GET /v1/info", perm: authz.PermAnyone, scope: host, handle: s.getInfo},
		{pattern: "GET /v1/whoami", perm: authz.PermAnyone, scope: host, handle: s.whoami},
		{pattern: "GET /v1/sizes", perm: authz.PermAnyone, scope: host, handle: s.listSizes},

		{pattern: "GET /v1/images", perm: authz.PermRead, scope: host, handle: s.listImages},
		{pattern: "POST /v1/images", perm: authz.PermManageImages, scope: host, audit: "images/write", handle: s.importImage, upload: true},
		{pattern: "POST /v1/images/pull", perm: authz.PermManageImages, scope: host, audit: "images/write", handle: s.pullImage},
		{pattern: "GET /v1/images/{name}", perm: authz.PermRead, scope: host, handle: s.getImage},
		{pattern: "DELETE /v1/images/{name}", perm: authz.PermManageImages, scope: host, audit: "images/delete", handle: s.deleteImage},

		{pattern: "GET /v1/instances", perm: authz.PermReadOwn, scope: host, handle: s.listInstances},
		{pattern: "POST /v1/instances", perm: authz.PermWrite, scope: host, audit: "computes/write", handle: s.createInstance},
		{pattern: "GET /v1/instances/{name}", perm: authz.PermRead, scope: inst, handle: s.getInstance},
		{pattern: "PATCH /v1/instances/{name}", perm: authz.PermWrite, scope: inst, audit: "computes/write", handle: s.updateInstance},
		{pattern: "DELETE /v1/instances/{name}", perm: authz.PermDelete, scope: inst, audit: "computes/delete", handle: s.deleteInstance},
		{pattern: "POST /v1/instances/{name}/start", perm: authz.PermStart, scope: inst, audit: "computes/start/action", handle: s.startInstance},
		{pattern: "POST /v1/instances/{name}/stop", perm: authz.PermStop, scope: inst, audit: "computes/stop/action", handle: s.stopInstance},
		{pattern: "POST /v1/instances/{name}/restart", perm: authz.PermRestart, scope: inst, audit: "computes/restart/action", handle: s.restartInstance},
		{pattern: "GET /v1/instances/{name}/logs", perm: authz.PermAppAccess, scope: inst, handle: s.getLogs},
		{pattern: "POST /v1/instances/{name}/exec", perm: authz.PermAppAccess, scope: inst, audit: "computes/applicationaccess/action:exec", handle: s.execInstance},
		{pattern: "POST /v1/instances/{name}/jobs", perm: authz.PermAppAccess, scope: inst, audit: "computes/applicationaccess/action:job-submit", handle: s.submitJob},
		{pattern: "GET /v1/instances/{name}/jobs", perm: authz.PermAppAccess, scope: inst, handle: s.listJobs},
		{pattern: "PUT /v1/instances/{name}/jobs/parallel", perm: authz.PermAppAccess, scope: inst, audit: "computes/applicationaccess/action:job-parallel", handle: s.setJobParallel},
		{pattern: "GET /v1/instances/{name}/jobs/{id}", perm: authz.PermAppAccess, scope: inst, handle: s.getJob},
		{pattern: "POST /v1/instances/{name}/jobs/{id}/cancel", perm: authz.PermAppAccess, scope: inst, audit: "computes/applicationaccess/action:job-cancel", handle: s.cancelJob},
		{pattern: "GET /v1/instances/{name}/jobs/{id}/logs", perm: authz.PermAppAccess, scope: inst, audit: "computes/applicationaccess/action:job-logs", stream: s.jobLogs},
		// Upgraded to raw byte streams.
		{pattern: "GET /v1/instances/{name}/tunnel", perm: authz.PermAppAccess, scope: inst, audit: "computes/applicationaccess/action:tunnel", stream: s.tunnel},
		{pattern: "GET /v1/instances/{name}/console", perm: authz.PermAppAccess, scope: inst, audit: "computes/applicationaccess/action:console", stream: s.console},

		{pattern: "GET /v1/operations", perm: authz.PermRead, scope: host, handle: s.listOperations},
		{pattern: "GET /v1/operations/{id}", perm: authz.PermReadOwn, scope: host, handle: s.getOperation},
		{pattern: "GET /v1/operations/{id}/wait", perm: authz.PermReadOwn, scope: host, stream: s.waitOperation},
		{pattern: "GET /v1/events", perm: authz.PermReadOwn, scope: host, stream: s.streamEvents},

		{pattern: "GET /v1/roles", perm: authz.PermRead, scope: host, handle: s.listRoles},
		{pattern: "POST /v1/roles", perm: authz.PermManageRoles, scope: host, audit: "roles/write", handle: s.assignRole},
		{pattern: "DELETE /v1/roles/{principal}/{role}", perm: authz.PermManageRoles, scope: host, audit: "roles/delete", handle: s.removeRole},
		{pattern: "GET /v1/networks", perm: authz.PermRead, scope: host, handle: s.listNetworks},
		{pattern: "POST /v1/networks", perm: authz.PermManageNetworks, scope: host, audit: "networks/write", handle: s.createNetwork},
		{pattern: "GET /v1/networks/{name}", perm: authz.PermRead, scope: host, handle: s.getNetwork},
		{pattern: "DELETE /v1/networks/{name}", perm: authz.PermManageNetworks, scope: host, audit: "networks/delete", handle: s.deleteNetwork},
		{pattern: "POST /v1/networks/{name}/subnets", perm: authz.PermManageNetworks, scope: host, audit: "networks/write", handle: s.addSubnet},
		{pattern: "DELETE /v1/networks/{name}/subnets/{subnet}", perm: authz.PermManageNetworks, scope: host, audit: "networks/delete", handle: s.removeSubnet},
		{pattern: "GET /v1/datasets", perm: authz.PermRead, scope: host, handle: s.listDatasets},
		{pattern: "POST /v1/datasets", perm: authz.PermManageDatasets, scope: host, audit: "datasets/write", handle: s.addDataset},
		{pattern: "DELETE /v1/datasets/{name}", perm: authz.PermManageDatasets, scope: host, audit: "datasets/delete", handle: s.removeDataset},
		{pattern: "GET /v1/quota", perm: authz.PermRead, scope: host, handle: s.getQuota},
		{pattern: "PUT /v1/quota", perm: authz.PermManageQuota, scope: host, audit: "quotas/write", handle: s.setQuota},
		{pattern: "GET /v1/audit", perm: authz.PermReadAudit, scope: host, handle: s.listAudit},
		{pattern: "POST /v1/host/shutdown", perm: authz.PermHostAdmin, scope: host, audit: "host/shutdown", handle: s.hostShutdown},
		{pattern: "GET /v1/doctor", perm: authz.PermHostAdmin, scope: host, handle: s.getDoctor},
		{pattern: "POST /v1/doctor", perm: authz.PermHostAdmin, scope: host, audit: "doctor/repair", handle: s.runDoctor},
		// The Prometheus text format, not JSON, at the path scrapers expect.
		{pattern: "GET /metrics", perm: authz.PermReadMetrics, scope: host, stream: s.metrics},
	}
}

// RouteInfo describes a route for documentation and tests.
type RouteInfo struct {
	Pattern    string
	Permission authz.Permission
	// Instance is true when the permission is checked on the {name}
	// instance (its own user's rights count).
	Instance bool
	// Audit names the call in the audit log ("" for reads).
	Audit string
}

// Routes lists the API's routes in table order.
func (s *Server) Routes() []RouteInfo {
	var out []RouteInfo
	for _, r := range s.routes() {
		out = append(out, RouteInfo{Pattern: r.pattern, Permission: r.perm, Instance: r.scope == scopeInstance, Audit: r.audit})
	}
	return out
}
