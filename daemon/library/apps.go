package library

import (
	"strings"

	"github.com/labvm/labvm/daemon/api"
	"github.com/labvm/labvm/daemon/errdefs"
	"github.com/labvm/labvm/daemon/store"
)

// DefaultApps are what data-science images serve; an image can list its
// own at import.
// DefaultApps are what an image serves when it lists none.
var DefaultApps = []store.App{
	{Name: "jupyter", Port: 8888, Path: "/tree"},
	{Name: "jupyterlab", Port: 8888, Path: "/lab"},
	{Name: "rstudio", Port: 8787, Path: "/"},
}

// AppsOf are the applications an image serves.
func AppsOf(img store.Image) []store.App {
	if len(img.Apps) == 0 {
		return DefaultApps
	}
	return img.Apps
}

// WireApps are applications as the API shows them.
func WireApps(apps []store.App) []api.App {
	out := make([]api.App, 0, len(apps))
	for _, a := range apps {
		out = append(out, api.App{Name: a.Name, Port: a.Port, Path: a.Path})
	}
	return out
}

// validateApps checks an image's application list.
func validateApps(in []api.App) ([]store.App, error) {
	seen := map[string]bool{}
	var out []store.App
	for _, a := range in {
		if err := validateImageName(a.Name); err != nil {
			return nil, errdefs.Invalidf("app name %q: use a-z, 0-9, '-', '.', '_'", a.Name)
		}
		if seen[a.Name] {
			return nil, errdefs.Invalidf("app %q listed twice", a.Name)
		}
		seen[a.Name] = true
		if a.Port < 1 || a.Port > 65535 {
			return nil, errdefs.Invalidf("app %s: port %d outside 1-65535", a.Name, a.Port)
		}
		path := a.Path
		if path == "" {
			path = "/"
		}
		if !strings.HasPrefix(path, "/") || strings.ContainsAny(path, " \t\n") {
			return nil, errdefs.Invalidf("app %s: path %q must start with / and have no spaces", a.Name, a.Path)
		}
		out = append(out, store.App{Name: a.Name, Port: a.Port, Path: path})
	}
	return out, nil
}
