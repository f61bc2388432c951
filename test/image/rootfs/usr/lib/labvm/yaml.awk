# yaml.awk - flatten the YAML subset used by cloud-init seeds into lines
#   path<TAB>value
# Mapping keys are joined with ".", sequence items are numbered from 0:
#   users.0.name  alice
#   users.0.ssh_authorized_keys.0  ssh-ed25519 AAAA...
# Supports block mappings/sequences (including compact "key:\n- item"),
# "- key: value" items, single/double quoted scalars, comments, flow
# collections ([a, b], {k: v}, possibly spanning lines) and block scalars
# (| and >, emitted with newlines replaced by spaces). Anchors, aliases, tags
# and multiple documents are not supported (tags/anchors are stripped).
# Runs under busybox awk.

function ltrim(s) { sub(/^[ \t]+/, "", s); return s }
function rtrim(s) { sub(/[ \t\r]+$/, "", s); return s }
function trim(s) { return rtrim(ltrim(s)) }

function emit(path, val) {
	sub(/^\./, "", path)
	gsub(/[\r\n]+/, " ", val)
	printf "%s\t%s\n", path, val
}

# remove a trailing " # comment" that is outside quotes
function strip_comment(s,   i, c, q, n) {
	q = ""; n = length(s)
	for (i = 1; i <= n; i++) {
		c = substr(s, i, 1)
		if (q == "") {
			if ((c == "\"" || c == "'") && (i == 1 || substr(s, i - 1, 1) ~ /[ \t\[{,:]/)) q = c
			else if (c == "#" && (i == 1 || substr(s, i - 1, 1) ~ /[ \t]/)) return rtrim(substr(s, 1, i - 1))
		} else if (q == "\"" && c == "\\") {
			i++
		} else if (c == q) {
			if (q == "'" && substr(s, i + 1, 1) == "'") i++
			else q = ""
		}
	}
	return rtrim(s)
}

# strip tags (!!str, !foo) and anchors (&a) in front of a value
function strip_props(s) {
	while (s ~ /^[!&][^ \t]*([ \t]|$)/) { sub(/^[!&][^ \t]*[ \t]*/, "", s) }
	return s
}

function unquote(s,   out, i, c, n) {
	s = strip_props(trim(s))
	n = length(s)
	if (n >= 2 && substr(s, 1, 1) == "\"" && substr(s, n, 1) == "\"") {
		s = substr(s, 2, n - 2); n = length(s); out = ""
		for (i = 1; i <= n; i++) {
			c = substr(s, i, 1)
			if (c == "\\" && i < n) {
				i++; c = substr(s, i, 1)
				if (c == "n") c = "\n"
				else if (c == "t") c = "\t"
				else if (c == "r") c = "\r"
				else if (c == "0") c = ""
			}
			out = out c
		}
		return out
	}
	if (n >= 2 && substr(s, 1, 1) == "'" && substr(s, n, 1) == "'") {
		s = substr(s, 2, n - 2); gsub(/''/, "'", s); return s
	}
	if (s == "~" || s == "null" || s == "Null" || s == "NULL") return ""
	return s
}

# position of the ":" separating a mapping key from its value, 0 if none
function key_colon(s,   i, c, q, n) {
	n = length(s)
	c = substr(s, 1, 1)
	if (c == "\"" || c == "'") {
		q = c
		for (i = 2; i <= n; i++) {
			c = substr(s, i, 1)
			if (q == "\"" && c == "\\") { i++; continue }
			if (c == q) {
				if (q == "'" && substr(s, i + 1, 1) == "'") { i++; continue }
				break
			}
		}
		s2 = substr(s, i + 1)
		if (match(s2, /^[ \t]*:([ \t]|$)/)) return i + RLENGTH - (substr(s2, RLENGTH, 1) ~ /[ \t]/ ? 1 : 0)
		return 0
	}
	if (c == "[" || c == "{") return 0
	for (i = 1; i <= n; i++) {
		if (substr(s, i, 1) == ":" && (i == n || substr(s, i + 1, 1) ~ /[ \t]/)) return i
		if (substr(s, i, 1) == "#" && i > 1 && substr(s, i - 1, 1) ~ /[ \t]/) return 0
	}
	return 0
}

# is a flow collection complete (brackets balanced outside quotes)?
function balanced(s,   i, c, q, d, n) {
	q = ""; d = 0; n = length(s)
	for (i = 1; i <= n; i++) {
		c = substr(s, i, 1)
		if (q != "") {
			if (q == "\"" && c == "\\") i++
			else if (c == q) q = ""
		} else if (c == "\"" || c == "'") q = c
		else if (c == "[" || c == "{") d++
		else if (c == "]" || c == "}") d--
	}
	return d <= 0
}

# ---- flow collection parser over global S (string), P (position), L (length)
function fskip() { while (P <= L && substr(S, P, 1) ~ /[ \t\r\n]/) P++ }
function ftoken(iskey,   start, c, q) {
	start = P; q = ""
	if (substr(S, P, 1) == "\"" || substr(S, P, 1) == "'") {
		q = substr(S, P, 1); P++
		while (P <= L) {
			c = substr(S, P, 1)
			if (q == "\"" && c == "\\") { P += 2; continue }
			if (c == q) {
				if (q == "'" && substr(S, P + 1, 1) == "'") { P += 2; continue }
				P++; break
			}
			P++
		}
		return substr(S, start, P - start)
	}
	while (P <= L) {
		c = substr(S, P, 1)
		if (c == "," || c == "]" || c == "}") break
		if (iskey && c == ":" && (P == L || index(" \t,]}", substr(S, P + 1, 1)) > 0)) break
		P++
	}
	return substr(S, start, P - start)
}
function fparse(path,   c, idx, key, tok) {
	fskip(); c = substr(S, P, 1)
	if (c == "[") {
		P++; idx = 0
		while (P <= L) {
			fskip()
			if (substr(S, P, 1) == "]") { P++; break }
			fparse(path "." idx); idx++
			fskip(); c = substr(S, P, 1); P++
			if (c != ",") break
		}
		return
	}
	if (c == "{") {
		P++
		while (P <= L) {
			fskip()
			if (substr(S, P, 1) == "}") { P++; break }
			key = unquote(ftoken(1)); fskip()
			if (substr(S, P, 1) == ":") { P++; fparse(path "." key) }
			else emit(path "." key, "")
			fskip(); c = substr(S, P, 1); P++
			if (c != ",") break
		}
		return
	}
	tok = ftoken(0)
	emit(path, unquote(tok))
}

# value of a "key: value" / "- value" remainder
function value(path, v) {
	v = strip_props(strip_comment(v))
	if (v ~ /^[\[{]/) {
		if (!balanced(v)) { fpath = path; fbuf = v; return }
		S = v; P = 1; L = length(S); fparse(path); return
	}
	if (v ~ /^[|>][-+0-9]*$/) { bpath = path; bmin = cur_ind; bbuf = ""; inblock = 1; return }
	emit(path, unquote(v))
}

function process(ind, rest,   parent, idx, ipath, rest2, sp, kc, key, v, kpath) {
	if (rest ~ /^-([ \t]|$)/) {
		while (n > 0 && sind[n] > ind) n--
		parent = (n > 0) ? spath[n] : ""
		idx = cnt[parent] + 0; cnt[parent] = idx + 1
		ipath = parent "." idx
		n++; sind[n] = ind + 1; spath[n] = ipath
		rest2 = substr(rest, 2)
		match(rest2, /^[ \t]*/); sp = RLENGTH
		rest2 = substr(rest2, sp + 1)
		if (rest2 == "" || rest2 ~ /^#/) return
		if (rest2 ~ /^-([ \t]|$)/ || key_colon(rest2) > 0) { process(ind + 1 + sp, rest2); return }
		cur_ind = ind
		value(ipath, rest2)
		return
	}
	kc = key_colon(rest)
	if (kc == 0) {
		# a flow collection as a whole (e.g. JSON meta-data); otherwise the
		# continuation of a multi-line plain scalar, which is ignored
		if (rest ~ /^[\[{]/) {
			while (n > 0 && sind[n] >= ind) n--
			cur_ind = ind
			value((n > 0) ? spath[n] : "", rest)
		}
		return
	}
	key = unquote(substr(rest, 1, kc - 1))
	v = ltrim(substr(rest, kc + 1))
	while (n > 0 && sind[n] >= ind) n--
	parent = (n > 0) ? spath[n] : ""
	kpath = parent "." key
	v = strip_comment(v)
	if (v == "" || v ~ /^#/) { n++; sind[n] = ind; spath[n] = kpath; return }
	cur_ind = ind
	value(kpath, v)
}

BEGIN { n = 0; inblock = 0; fbuf = "" }
{
	line = $0
	sub(/\r$/, "", line)
	if (inblock) {
		if (line ~ /^[ \t]*$/) { bbuf = bbuf "\n"; next }
		match(line, /^ */)
		if (RLENGTH > bmin) { bbuf = bbuf (bbuf == "" ? "" : "\n") trim(line); next }
		emit(bpath, bbuf); inblock = 0
	}
	if (fbuf != "") {
		fbuf = fbuf " " line
		if (balanced(fbuf)) { S = fbuf; P = 1; L = length(S); fbuf = ""; fparse(fpath) }
		next
	}
	if (line ~ /^[ \t]*(#.*)?$/) next
	if (line ~ /^(---|\.\.\.)([ \t]|$)/ || line ~ /^%/) next
	match(line, /^ */)
	process(RLENGTH, substr(line, RLENGTH + 1))
}
END {
	if (inblock) emit(bpath, bbuf)
	if (fbuf != "") { S = fbuf; P = 1; L = length(S); fparse(fpath) }
}
