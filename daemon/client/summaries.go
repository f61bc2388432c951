package client

import (
	"bytes"
	"encoding/json"
	"errors"
	"strconv"

	"github.com/labvm/labvm/daemon/api"
)

// decodeSummaries decodes the summary view. encoding/json's reflection
// took most of `labvm list`'s time at 10,000 instances; the daemon's
// summaries are flat objects of plain ASCII strings and integers, which a
// direct scan decodes several times faster. Anything else (escapes,
// non-ASCII, null, unknown or differently cased keys, nesting, bad JSON)
// goes to encoding/json, so the result is always encoding/json's (a fuzz
// test holds the two equal).
func decodeSummaries(raw []byte) ([]api.InstanceSummary, error) {
	if out, err := scanSummaries(raw); err == nil {
		return out, nil
	}
	var out []api.InstanceSummary
	return out, json.Unmarshal(raw, &out)
}

// errSlowPath: scanSummaries met something it leaves to encoding/json.
var errSlowPath = errors.New("not a plain summary list")

type summaryScanner struct {
	b []byte
	i int
	// text is b as one string: every string decoded is a piece of it,
	// one allocation in all rather than one per field.
	text string
}

func scanSummaries(raw []byte) ([]api.InstanceSummary, error) {
	s := &summaryScanner{b: raw, text: string(raw)}
	s.space()
	if !s.eat('[') {
		return nil, errSlowPath
	}
	// Room for every element: each has an "id" (an estimate is enough).
	out := make([]api.InstanceSummary, 0, bytes.Count(raw, []byte(`{"id"`)))
	s.space()
	if !s.eat(']') {
		for {
			var v api.InstanceSummary
			if err := s.object(&v); err != nil {
				return nil, err
			}
			out = append(out, v)
			s.space()
			if s.eat(']') {
				break
			}
			if !s.eat(',') {
				return nil, errSlowPath
			}
			s.space()
		}
	}
	s.space()
	if s.i != len(s.b) {
		return nil, errSlowPath
	}
	return out, nil
}

func (s *summaryScanner) space() {
	for s.i < len(s.b) {
		switch s.b[s.i] {
		case ' ', '\t', '\n', '\r':
			s.i++
		default:
			return
		}
	}
}

func (s *summaryScanner) eat(c byte) bool {
	if s.i < len(s.b) && s.b[s.i] == c {
		s.i++
		return true
	}
	return false
}

// str reads a string with nothing to unescape or validate: printable
// ASCII other than the backslash. It returns where the bytes between the
// quotes start and end.
func (s *summaryScanner) str() (int, int, error) {
	if !s.eat('"') {
		return 0, 0, errSlowPath
	}
	start := s.i
	for ; s.i < len(s.b); s.i++ {
		switch c := s.b[s.i]; {
		case c == '"':
			s.i++
			return start, s.i - 1, nil
		case c < 0x20 || c == '\\' || c >= 0x80:
			return 0, 0, errSlowPath
		}
	}
	return 0, 0, errSlowPath
}

func (s *summaryScanner) value() (string, error) {
	start, end, err := s.str()
	if err != nil {
		return "", err
	}
	return s.text[start:end], nil
}

// integer reads an int in JSON's integer syntax (no fraction, exponent
// or leading zero).
func (s *summaryScanner) integer() (int, error) {
	start := s.i
	s.eat('-')
	digits := s.i
	for s.i < len(s.b) && s.b[s.i] >= '0' && s.b[s.i] <= '9' {
		s.i++
	}
	if s.i == digits || (s.b[digits] == '0' && s.i-digits > 1) {
		return 0, errSlowPath
	}
	if s.i < len(s.b) {
		switch s.b[s.i] {
		case '.', 'e', 'E':
			return 0, errSlowPath
		}
	}
	n, err := strconv.Atoi(string(s.b[start:s.i]))
	if err != nil {
		return 0, errSlowPath
	}
	return n, nil
}

func (s *summaryScanner) object(v *api.InstanceSummary) error {
	if !s.eat('{') {
		return errSlowPath
	}
	s.space()
	if s.eat('}') {
		return nil
	}
	for {
		ks, ke, err := s.str()
		if err != nil {
			return err
		}
		s.space()
		if !s.eat(':') {
			return errSlowPath
		}
		s.space()
		switch s.text[ks:ke] {
		case "id":
			v.ID, err = s.value()
		case "name":
			v.Name, err = s.value()
		case "state":
			var st string
			st, err = s.value()
			v.State = api.InstanceState(st)
		case "size":
			v.Size, err = s.value()
		case "image":
			v.Image, err = s.value()
		case "ip":
			v.IP, err = s.value()
		case "owner":
			v.Owner, err = s.value()
		case "jobs_running":
			v.JobsRunning, err = s.integer()
		case "jobs_queued":
			v.JobsQueued, err = s.integer()
		case "created_at":
			start := s.i
			if _, _, err = s.str(); err == nil {
				// time.Time's own decoding, as encoding/json calls it.
				if v.CreatedAt.UnmarshalJSON(s.b[start:s.i]) != nil {
					err = errSlowPath
				}
			}
		default:
			// encoding/json matches keys without regard to case; a
			// field this client does not know may be one.
			return errSlowPath
		}
		if err != nil {
			return err
		}
		s.space()
		if s.eat('}') {
			return nil
		}
		if !s.eat(',') {
			return errSlowPath
		}
		s.space()
	}
}
