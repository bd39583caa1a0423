package approval_test

import (
	"crypto/ed25519"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/wormvault/wormvault/internal/approval"
)

func statement(t testing.TB) []byte {
	t.Helper()
	b, err := approval.Statement{Type: approval.TypeDeletionApproval, Vault: "wv-1", Request: 7, Kind: "chunks",
		TargetsDigest: make([]byte, 32), Approvals: 2, Delay: 72 * time.Hour, AdminSet: 1, Signer: "bob"}.Bytes()
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestParseIsStrict(t *testing.T) {
	t.Parallel()
	good := statement(t)
	if _, err := approval.Parse(good); err != nil {
		t.Fatalf("Parse(canonical): %v", err)
	}
	for name, b := range map[string]string{
		"CRLF":          strings.ReplaceAll(string(good), "\n", "\r\n"),
		"trailing data": string(good) + "extra: 1\n",
		"no final LF":   strings.TrimSuffix(string(good), "\n"),
		"reordered":     strings.Replace(strings.Replace(string(good), "vault: wv-1\n", "", 1), "request: 7\n", "request: 7\nvault: wv-1\n", 1),
		"leading zero":  strings.Replace(string(good), "request: 7", "request: 07", 1),
		"upper hex":     strings.Replace(string(good), strings.Repeat("0", 64), strings.Repeat("A", 64), 1),
		"bad signer":    strings.Replace(string(good), "signer: bob", "signer: Bob", 1),
		"other version": strings.Replace(string(good), "v1", "v2", 1),
		"spaced policy": strings.Replace(string(good), "approvals=2 delay", "approvals=2  delay", 1),
	} {
		if _, err := approval.Parse([]byte(b)); !errors.Is(err, approval.ErrBadStatement) {
			t.Errorf("%s: Parse = %v, want ErrBadStatement", name, err)
		}
	}
}

func TestRawKey(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	priv, pub, err := approval.GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	file := filepath.Join(dir, "k")
	if err := approval.WritePrivateKey(file, priv); err != nil {
		t.Fatal(err)
	}
	if fi, _ := os.Stat(file); fi.Mode().Perm() != 0o600 {
		t.Errorf("key file mode %v, want 0600", fi.Mode().Perm())
	}
	if err := approval.WritePrivateKey(file, priv); err == nil {
		t.Error("WritePrivateKey overwrote a key")
	}
	back, err := approval.ReadPrivateKey(file)
	if err != nil || !back.Equal(priv) {
		t.Fatalf("ReadPrivateKey: %v", err)
	}
	parsed, err := approval.ParsePublicKey(pub.String() + " comment")
	if err != nil || !parsed.Equal(pub) {
		t.Fatalf("ParsePublicKey(%q) = %v, %v", pub.String(), parsed, err)
	}
	msg := statement(t)
	if err := pub.Verify(msg, approval.FormatRaw, ed25519.Sign(priv, msg)); err != nil {
		t.Errorf("Verify: %v", err)
	}
	tampered := append([]byte{}, msg...)
	tampered[len(tampered)-2] = 'c'
	if err := pub.Verify(tampered, approval.FormatRaw, ed25519.Sign(priv, msg)); !errors.Is(err, approval.ErrBadSignature) {
		t.Errorf("Verify(tampered) = %v", err)
	}
	if err := pub.Verify(msg, approval.FormatSSHSIG, ed25519.Sign(priv, msg)); !errors.Is(err, approval.ErrBadSignature) {
		t.Errorf("Verify(raw as sshsig) = %v", err)
	}
}

func sshKeygen(t testing.TB, args ...string) {
	t.Helper()
	if out, err := exec.Command("ssh-keygen", args...).CombinedOutput(); err != nil {
		t.Fatalf("ssh-keygen %v: %v: %s", args, err, out)
	}
}

// sshSign signs msg with ssh-keygen -Y sign under namespace.
func sshSign(t testing.TB, key, namespace string, msg []byte) []byte {
	t.Helper()
	file := filepath.Join(t.TempDir(), "statement")
	os.WriteFile(file, msg, 0o600)
	sshKeygen(t, "-Y", "sign", "-n", namespace, "-f", key, file)
	sig, err := os.ReadFile(file + ".sig")
	if err != nil {
		t.Fatal(err)
	}
	return sig
}

func TestSSHSIG(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	key, other, rsa := filepath.Join(dir, "ed"), filepath.Join(dir, "other"), filepath.Join(dir, "rsa")
	sshKeygen(t, "-q", "-t", "ed25519", "-N", "", "-f", key)
	sshKeygen(t, "-q", "-t", "ed25519", "-N", "", "-f", other)
	sshKeygen(t, "-q", "-t", "rsa", "-b", "2048", "-N", "", "-f", rsa)
	pubLine, _ := os.ReadFile(key + ".pub")
	pub, err := approval.ParsePublicKey(string(pubLine))
	if err != nil || pub.Kind != approval.KindSSH {
		t.Fatalf("ParsePublicKey(ssh-ed25519) = %+v, %v", pub, err)
	}
	rsaLine, _ := os.ReadFile(rsa + ".pub")
	if _, err := approval.ParsePublicKey(string(rsaLine)); !errors.Is(err, approval.ErrBadKey) {
		t.Errorf("ParsePublicKey(ssh-rsa) = %v, want ErrBadKey", err)
	}
	msg := statement(t)
	if err := pub.Verify(msg, approval.FormatSSHSIG, sshSign(t, key, approval.Namespace, msg)); err != nil {
		t.Fatalf("Verify(real ssh-keygen signature): %v", err)
	}
	for name, sig := range map[string][]byte{
		"wrong namespace": sshSign(t, key, "file", msg),
		"other key":       sshSign(t, other, approval.Namespace, msg),
		"RSA key":         sshSign(t, rsa, approval.Namespace, msg),
		"other message":   sshSign(t, key, approval.Namespace, append([]byte("x"), msg...)),
		"garbage":         []byte("-----BEGIN SSH SIGNATURE-----\nAAAA\n-----END SSH SIGNATURE-----\n"),
	} {
		if err := pub.Verify(msg, approval.FormatSSHSIG, sig); !errors.Is(err, approval.ErrBadSignature) {
			t.Errorf("%s: Verify = %v, want ErrBadSignature", name, err)
		}
	}
}
