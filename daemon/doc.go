// Package daemon is labvmd's wiring: it reads nothing itself (cmd/labvmd
// fills Config), builds the engines (lifecycle, jobs, vnets, library,
// doctor), the operations, the authorizer and the audit log, hands them
// to the API server, and runs and stops them in order.
//
// Where things live: the route table and its permissions in httpapi; who
// may do what in authz; operations, their steps and crash points in ops;
// create/start/stop/delete and readiness in lifecycle; the job queue in
// jobs; VNets and the firewall in vnets; images in library; the audit log
// in audit; the error → code table in errdefs.
package daemon
