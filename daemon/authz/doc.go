// Package authz decides who may do what. It owns the caller's identity
// (the Unix credentials the kernel reports for the socket peer), the roles
// stored for users and groups, the permissions each role grants, and the
// rule that application access belongs only to an instance's own user.
//
// It knows nothing of HTTP routes or of how operations run: the API names
// a permission per route and asks here.
package authz
