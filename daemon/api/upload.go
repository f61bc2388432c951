package api

import (
	"fmt"
	"net/url"
	"strconv"
	"strings"
)

// ImportImageRequest describes an image whose bytes the client streams as
// the body of POST /v1/images: Content-Type application/octet-stream, a
// Content-Length, and these fields in the query string (see Query). The
// daemon never opens a path for the caller: the client reads the file with
// the caller's own rights.
//
//	curl --unix-socket /run/labvm/labvm.sock -T disk.qcow2 \
//	  'http://labvm/v1/images?name=debian-12&sha256=5f1c…&app=jupyter%3D8888%2Ftree'
type ImportImageRequest struct {
	Name string
	// SHA256 is the expected digest of the bytes sent; empty skips the
	// check.
	SHA256 string
	// Apps are the image's applications; empty means the defaults
	// (jupyter, jupyterlab, rstudio).
	Apps []App
}

// ImportContentType is the body's media type.
const ImportContentType = "application/octet-stream"

// Query encodes the request for the URL: name, sha256 and one app per
// application as NAME=PORT/PATH.
func (r ImportImageRequest) Query() url.Values {
	q := url.Values{"name": {r.Name}}
	if r.SHA256 != "" {
		q.Set("sha256", r.SHA256)
	}
	for _, a := range r.Apps {
		q.Add("app", fmt.Sprintf("%s=%d%s", a.Name, a.Port, a.Path))
	}
	return q
}

// ParseImportQuery reads what Query wrote. Unknown or repeated parameters
// are errors, as unknown JSON fields are elsewhere, so a typo never drops a
// setting silently.
func ParseImportQuery(q url.Values) (ImportImageRequest, error) {
	var r ImportImageRequest
	for k, v := range q {
		switch k {
		case "name", "sha256":
			if len(v) != 1 {
				return r, Errorf(CodeInvalidArgument, "query parameter %q given %d times", k, len(v))
			}
		case "app":
		default:
			return r, Errorf(CodeInvalidArgument, "unknown query parameter %q; known: name, sha256, app", k)
		}
	}
	r.Name, r.SHA256 = q.Get("name"), q.Get("sha256")
	for _, s := range q["app"] {
		a, err := ParseApp(s)
		if err != nil {
			return r, Errorf(CodeInvalidArgument, "app %q: %v", s, err)
		}
		r.Apps = append(r.Apps, a)
	}
	return r, nil
}

// ParseApp reads NAME=PORT[/PATH], the form of `--app` and of the app
// query parameter. The path defaults to "/".
func ParseApp(s string) (App, error) {
	name, rest, ok := strings.Cut(s, "=")
	if !ok || name == "" {
		return App{}, fmt.Errorf("want NAME=PORT[/PATH], e.g. jupyter=8888/tree")
	}
	portText, path, _ := strings.Cut(rest, "/")
	port, err := strconv.Atoi(portText)
	if err != nil || port < 1 || port > 65535 {
		return App{}, fmt.Errorf("port %q is not 1-65535", portText)
	}
	return App{Name: name, Port: port, Path: "/" + path}, nil
}
