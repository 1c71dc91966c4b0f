package localcluster

import (
	"archive/tar"
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"io"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// readTar returns the regular files of a tar archive by name.
func readTar(t *testing.T, raw []byte) map[string][]byte {
	t.Helper()
	files := map[string][]byte{}
	tr := tar.NewReader(bytes.NewReader(raw))
	for {
		hdr, err := tr.Next()
		if err == io.EOF {
			return files
		}
		if err != nil {
			t.Fatal(err)
		}
		if hdr.Typeflag != tar.TypeReg {
			continue
		}
		data, err := io.ReadAll(tr)
		if err != nil {
			t.Fatal(err)
		}
		files[hdr.Name] = data
	}
}

func TestDockerArchive(t *testing.T) {
	img := Image{Ref: "localhost/nodefw-agent:dev", Package: "./cmd/agent", Path: "/agent", User: "0:0"}
	binary := []byte("\x7fELF not really")
	raw, err := DockerArchive(img, binary)
	if err != nil {
		t.Fatal(err)
	}
	again, err := DockerArchive(img, binary)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(raw, again) {
		t.Error("the same binary made two different archives")
	}

	files := readTar(t, raw)
	var manifest []struct {
		Config   string
		RepoTags []string
		Layers   []string
	}
	if err := json.Unmarshal(files["manifest.json"], &manifest); err != nil {
		t.Fatal(err)
	}
	if len(manifest) != 1 || len(manifest[0].Layers) != 1 {
		t.Fatalf("manifest.json: %s", files["manifest.json"])
	}
	if d := cmp.Diff([]string{img.Ref}, manifest[0].RepoTags); d != "" {
		t.Errorf("RepoTags (-want +got):\n%s", d)
	}

	layer := files[manifest[0].Layers[0]]
	if d := cmp.Diff(map[string][]byte{"agent": binary}, readTar(t, layer)); d != "" {
		t.Errorf("layer (-want +got):\n%s", d)
	}
	sum := sha256.Sum256(layer)
	var config struct {
		Config struct {
			User       string
			Entrypoint []string
		} `json:"config"`
		RootFS struct {
			DiffIDs []string `json:"diff_ids"`
		} `json:"rootfs"`
	}
	cfgRaw := files[manifest[0].Config]
	if err := json.Unmarshal(cfgRaw, &config); err != nil {
		t.Fatal(err)
	}
	cfgSum := sha256.Sum256(cfgRaw)
	if want := hex.EncodeToString(cfgSum[:]) + ".json"; manifest[0].Config != want {
		t.Errorf("config file %s, want it named by its digest %s", manifest[0].Config, want)
	}
	if d := cmp.Diff([]string{"sha256:" + hex.EncodeToString(sum[:])}, config.RootFS.DiffIDs); d != "" {
		t.Errorf("diff_ids (-want +got):\n%s", d)
	}
	if config.Config.User != "0:0" || !cmp.Equal(config.Config.Entrypoint, []string{"/agent"}) {
		t.Errorf("config: user %q entrypoint %v, want 0:0 [/agent]", config.Config.User, config.Config.Entrypoint)
	}
}

func TestUnescapeMountPath(t *testing.T) {
	for in, want := range map[string]string{
		"/var/lib/nodefw-cluster":  "/var/lib/nodefw-cluster",
		`/mnt/with\040space`:       "/mnt/with space",
		`/mnt/tab\011and\134slash`: "/mnt/tab\tand\\slash",
	} {
		if got := unescapeMountPath(in); got != want {
			t.Errorf("unescapeMountPath(%q) = %q, want %q", in, got, want)
		}
	}
}
