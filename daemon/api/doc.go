// Package api holds the wire types of labvmd's HTTP API: requests,
// responses, operations and the error envelope with its stable codes. It is
// shared by the server and the client and imports nothing of labvm's own, so
// the API cannot drift with internal types (a test enforces this).
package api
