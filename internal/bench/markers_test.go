package bench

import (
	"errors"
	"strings"
	"testing"
)

func TestSplice(t *testing.T) {
	t.Parallel()
	block := BeginMarker + "\nNEW\n" + EndMarker
	tests := []struct {
		name    string
		doc     string
		want    string
		wantErr bool
	}{
		{
			name: "replaces between the markers and keeps the rest",
			doc:  "# B\n\nintro\n\n" + BeginMarker + "\nOLD\ntable\n" + EndMarker + "\n\n## Notes\n\nmine\n",
			want: "# B\n\nintro\n\n" + block + "\n\n## Notes\n\nmine\n",
		},
		{
			name: "empty block",
			doc:  "a\n" + BeginMarker + EndMarker + "\nb\n",
			want: "a\n" + block + "\nb\n",
		},
		{
			name: "no markers: appended, nothing lost",
			doc:  "# Hand written\n\nkeep me\n\n",
			want: "# Hand written\n\nkeep me\n\n" + block + "\n",
		},
		{name: "only a begin marker", doc: "x " + BeginMarker + " y", wantErr: true},
		{name: "only an end marker", doc: "x " + EndMarker, wantErr: true},
		{name: "end before begin", doc: EndMarker + "\n" + BeginMarker, wantErr: true},
		{name: "two blocks", doc: block + "\n" + block, wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := Splice(tt.doc, "\nNEW\n\n")
			if tt.wantErr {
				if !errors.Is(err, ErrMarkers) {
					t.Fatalf("Splice error = %v, want ErrMarkers", err)
				}
				return
			}
			if err != nil || got != tt.want {
				t.Fatalf("Splice(%q) =\n%q, %v\nwant\n%q", tt.doc, got, err, tt.want)
			}
		})
	}
}

func TestSpliceNewDocumentSurvivesRegeneration(t *testing.T) {
	t.Parallel()
	doc, err := Splice("", "FIRST")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(doc, "# Benchmarks") || !strings.Contains(doc, "## Notes") ||
		!strings.Contains(doc, BeginMarker+"\nFIRST\n"+EndMarker) {
		t.Fatalf("new document lacks its title, notes or block:\n%s", doc)
	}
	doc = strings.Replace(doc, "go here.", "go here.\n\nA finding.", 1)
	again, err := Splice(doc, "SECOND")
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(again, "FIRST") || !strings.Contains(again, "SECOND") || !strings.Contains(again, "A finding.") {
		t.Fatalf("regenerated document:\n%s", again)
	}
}
