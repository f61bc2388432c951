package images

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// halfThenWait sends half of data at once and the rest only after release
// is closed; it gives up if the client leaves first.
func halfThenWait(data []byte, release <-chan struct{}) handler {
	return func(w http.ResponseWriter, r *http.Request, n int) {
		w.Header().Set("ETag", `"a"`)
		w.Header().Set("Content-Length", fmt.Sprint(len(data)))
		w.WriteHeader(http.StatusOK)
		w.Write(data[:len(data)/2])
		_ = http.NewResponseController(w).Flush()
		select {
		case <-release:
			w.Write(data[len(data)/2:])
		case <-r.Context().Done():
		}
	}
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// watching counts a flight's watchers, leader included, so tests know
// when a second pull has joined.
func (p *Puller) watching(key string) int {
	p.mu.Lock()
	f := p.flights[key]
	p.mu.Unlock()
	if f == nil {
		return 0
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.watchers)
}

type pullResult struct {
	imp Imported
	err error
}

// TestPullShared runs two pulls of one URL at once: they share one
// download, and each caller's context ends only its own wait.
func TestPullShared(t *testing.T) {
	f := newFixtures(t)
	data := readFile(t, f.qcow2)
	half := fmt.Sprintf("bytes=%d-", len(data)/2)
	tests := []struct {
		name string
		// cancel is the pull (0 leads, 1 follows) whose context ends
		// mid-download; -1 for none.
		cancel     int
		wantErr    [2]error
		wantRanges []string
	}{
		{name: "one download for both", cancel: -1, wantRanges: []string{""}},
		{name: "leader cancelled, follower resumes", cancel: 0, wantErr: [2]error{context.Canceled, nil}, wantRanges: []string{"", half}},
		{name: "follower cancelled, leader goes on", cancel: 1, wantErr: [2]error{nil, context.Canceled}, wantRanges: []string{""}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			release := make(chan struct{})
			o := newOrigin(t, firstThen(halfThenWait(data, release), content(data, `"a"`)))
			cat := newPullCatalogue(t)
			url := o.URL + "/image"

			var (
				wg      sync.WaitGroup
				results [2]chan pullResult
				cancels [2]context.CancelFunc
				got     [2]atomic.Int64
				started = make(chan struct{})
				once    sync.Once
			)
			defer wg.Wait()
			start := func(i int) {
				ctx, cancel := context.WithCancel(context.Background())
				cancels[i], results[i] = cancel, make(chan pullResult, 1)
				wg.Add(1)
				go func() {
					defer wg.Done()
					defer cancel()
					imp, err := cat.Pull(ctx, PullOptions{URL: url, Progress: func(done, total int64) {
						got[i].Store(done)
						once.Do(func() { close(started) })
					}})
					results[i] <- pullResult{imp, err}
				}()
			}
			start(0)
			<-started
			start(1)
			waitFor(t, "the second pull to join", func() bool { return cat.Puller.watching(url) == 2 })

			var res [2]pullResult
			if tc.cancel >= 0 {
				cancels[tc.cancel]()
				res[tc.cancel] = <-results[tc.cancel]
			}
			close(release)
			for i := range res {
				if i != tc.cancel {
					res[i] = <-results[i]
				}
			}

			for i, r := range res {
				if !errors.Is(r.err, tc.wantErr[i]) || (tc.wantErr[i] == nil) != (r.err == nil) {
					t.Fatalf("pull %d error = %v, want %v", i, r.err, tc.wantErr[i])
				}
				if r.err == nil && (r.imp.SourceDigest != digestOf(data) || got[i].Load() != int64(len(data))) {
					t.Fatalf("pull %d = %+v after %d bytes of progress, want digest %s after %d", i, r.imp, got[i].Load(), digestOf(data), len(data))
				}
			}
			if ranges := o.requests(); fmt.Sprint(ranges) != fmt.Sprint(tc.wantRanges) {
				t.Fatalf("requests had Range %q, want %q", ranges, tc.wantRanges)
			}
			if names := bases(t, cat); len(names) != 1 {
				t.Fatalf("catalogue holds %v, want one base", names)
			}
			if names := partials(t, cat); len(names) != 0 {
				t.Fatalf("partial area holds %v after success", names)
			}
		})
	}
}

// TestPullCancelled stops a pull mid-download: the catalogue gains
// nothing, and the next pull of the URL resumes where it stopped.
func TestPullCancelled(t *testing.T) {
	f := newFixtures(t)
	data := readFile(t, f.qcow2)
	never := make(chan struct{})
	o := newOrigin(t, firstThen(halfThenWait(data, never), content(data, `"a"`)))
	cat := newPullCatalogue(t)
	url := o.URL + "/image"

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	_, err := cat.Pull(ctx, PullOptions{URL: url, Progress: func(done, total int64) {
		if done > 0 {
			cancel()
		}
	}})
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("Pull error = %v, want context.Canceled", err)
	}
	if names := bases(t, cat); len(names) != 0 {
		t.Fatalf("cancelled pull left %v in the catalogue", names)
	}
	if names := partials(t, cat); len(names) != 2 {
		t.Fatalf("partial area holds %v, want the data and its metadata", names)
	}

	imp, err := cat.Pull(context.Background(), PullOptions{URL: url, SHA256: digestOf(data)})
	if err != nil {
		t.Fatal(err)
	}
	if imp.SourceDigest != digestOf(data) {
		t.Fatalf("resumed pull digest %s, want %s", imp.SourceDigest, digestOf(data))
	}
	if ranges := o.requests(); len(ranges) != 2 || ranges[1] == "" {
		t.Fatalf("requests had Range %q, want the second to resume", ranges)
	}
}

// TestPullDedup pulls an image already imported from a file: the existing
// base is reused, not replaced.
func TestPullDedup(t *testing.T) {
	f := newFixtures(t)
	ctx := context.Background()
	o := newOrigin(t, content(readFile(t, f.qcow2), `"a"`))
	cat := newPullCatalogue(t)
	first, err := importFile(ctx, cat, f.qcow2, ImportOptions{})
	if err != nil {
		t.Fatal(err)
	}
	before, err := os.Stat(first.Path)
	if err != nil {
		t.Fatal(err)
	}
	pulled, err := cat.Pull(ctx, PullOptions{URL: o.URL + "/disk.qcow2"})
	if err != nil {
		t.Fatal(err)
	}
	if pulled != first {
		t.Fatalf("Pull = %+v, want the imported %+v", pulled, first)
	}
	after, err := os.Stat(first.Path)
	if err != nil {
		t.Fatal(err)
	}
	if !os.SameFile(before, after) {
		t.Fatal("pull replaced the stored base instead of reusing it")
	}
	if names := bases(t, cat); len(names) != 1 {
		t.Fatalf("catalogue holds %v, want one base", names)
	}
}
