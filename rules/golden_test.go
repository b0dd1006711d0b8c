package rules

import (
	"bytes"
	"flag"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"testing"
)

var update = flag.Bool("update", false, "rewrite the want sections of rules/testdata/*.txtar")

// archive is a txtar-like file: a comment, then "-- name --" sections.
type archive struct {
	comment string
	files   []archiveFile
}

type archiveFile struct {
	name string
	data string
}

func parseArchive(data string) archive {
	var a archive
	cur := &a.comment
	for _, line := range strings.SplitAfter(data, "\n") {
		if strings.HasPrefix(line, "-- ") && strings.HasSuffix(strings.TrimRight(line, "\n"), " --") {
			name := strings.TrimSuffix(strings.TrimPrefix(strings.TrimRight(line, "\n"), "-- "), " --")
			a.files = append(a.files, archiveFile{name: name})
			cur = &a.files[len(a.files)-1].data
			continue
		}
		*cur += line
	}
	return a
}

func (a archive) format() string {
	var b strings.Builder
	b.WriteString(a.comment)
	for _, f := range a.files {
		b.WriteString("-- " + f.name + " --\n" + f.data)
	}
	return b.String()
}

// TestGolden loads the .yaml files of each testdata archive (with any other
// files beside them for include:) and compares the described set, or every
// error, with the archive's "want" section.
func TestGolden(t *testing.T) {
	paths, _ := filepath.Glob("testdata/*.txtar")
	if len(paths) < 5 {
		t.Fatalf("found %d golden files, want at least 5", len(paths))
	}
	for _, path := range paths {
		t.Run(filepath.Base(path), func(t *testing.T) {
			raw, err := os.ReadFile(path)
			if err != nil {
				t.Fatal(err)
			}
			a := parseArchive(string(raw))
			dir := t.TempDir()
			var inputs []string
			want := -1
			for i, f := range a.files {
				if f.name == "want" {
					want = i
					continue
				}
				p := filepath.Join(dir, f.name)
				os.MkdirAll(filepath.Dir(p), 0o755)
				if err := os.WriteFile(p, []byte(f.data), 0o644); err != nil {
					t.Fatal(err)
				}
				if strings.HasSuffix(f.name, ".yaml") {
					inputs = append(inputs, p)
				}
			}
			if want < 0 {
				t.Fatal("archive has no want section")
			}
			sort.Strings(inputs)
			var got bytes.Buffer
			set, err := Load(inputs...)
			if err != nil {
				got.WriteString("error:\n" + err.Error() + "\n")
			} else {
				set.Describe(&got)
				if set.Skipped > 0 {
					got.WriteString("skipped " + strconv.Itoa(set.Skipped) + "\n")
				}
			}
			gotS := strings.ReplaceAll(got.String(), dir+string(filepath.Separator), "")
			if *update {
				a.files[want].data = gotS
				os.WriteFile(path, []byte(a.format()), 0o644)
				return
			}
			if gotS != a.files[want].data {
				t.Errorf("got:\n%s\nwant:\n%s", gotS, a.files[want].data)
			}
		})
	}
}
