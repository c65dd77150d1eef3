<?php
// Submit PDFs to importer's workers from PHP, as a Gearman application does, and follow
// each job's page progress with jobStatus(). The wire format is the README's
// "Submitting from other languages".
//
//   IMPORTER_SECRET_KEYS=k1:SECRET IMPORTER_GEARMAN_SERVERS=127.0.0.1:4730 \
//     php examples/php/submit.php --email ops@example.com [--batch NAME] FILE...
//
// Needs php-cli and php-gearman (Debian: apt-get install php-cli php-gearman). The files
// must lie under the workers' IMPORTER_ALLOWED_ROOTS, named as the workers see them.
// Prints one JSON line per file when its job has ended: its job id, its handle and the
// page progress (numerator, denominator) seen while it ran. `--legacy` sends the classic
// unsigned `file||:||email` job instead, which workers refuse and count.

const INFO = 'importer job payload encryption v2';
const POLL_MICROSECONDS = 50000;
const JSON_FLAGS = JSON_UNESCAPED_SLASHES;

function fail(string $message): never
{
    fwrite(STDERR, "submit.php: $message\n");
    exit(2);
}

function b64url(string $bytes): string
{
    return rtrim(strtr(base64_encode($bytes), '+/', '-_'), '=');
}

// The first key of IMPORTER_SECRET_KEYS (`kid:secret,...`, newest first) signs.
function signing_key(): array
{
    $ring = getenv('IMPORTER_SECRET_KEYS') ?: fail('IMPORTER_SECRET_KEYS is not set: give it the fleet\'s keys (importer keys new)');
    [$kid, $secret] = array_pad(explode(':', trim(explode(',', $ring)[0]), 2), 2, '');
    if ($kid === '' || strlen($secret) < 32) {
        fail('the first key of IMPORTER_SECRET_KEYS is not kid:secret with a secret of 32 bytes or more');
    }
    return [$kid, $secret];
}

// One signed, sealed job: the clear header line, a newline, nonce + ciphertext + tag.
function job(string $jobId, string $file, string $email, ?string $batch, int $batchSize): string
{
    [$kid, $secret] = signing_key();
    $clear = ['iat' => time(), 'job_id' => $jobId, 'kid' => $kid, 'v' => 2];  // sorted keys
    $clear['sig'] = b64url(hash_hmac('sha256', json_encode($clear, JSON_FLAGS), $secret, true));
    ksort($clear);
    $header = json_encode($clear, JSON_FLAGS);
    $private = ['email' => $email, 'file' => $file];
    if ($batch !== null) {
        $private = ['batch' => $batch, 'batch_size' => $batchSize] + $private;
    }
    $key = hash_hkdf('sha256', $secret, 32, INFO);
    $nonce = random_bytes(12);
    $tag = '';
    $sealed = openssl_encrypt(json_encode($private, JSON_FLAGS), 'aes-256-gcm', $key, OPENSSL_RAW_DATA, $nonce, $tag, $header, 16);
    if ($sealed === false) {
        fail('openssl_encrypt failed: ' . openssl_error_string());
    }
    return $header . "\n" . $nonce . $sealed . $tag;
}

$options = getopt('', ['email:', 'batch:', 'legacy'], $rest);
$files = array_slice($argv, $rest);
$email = $options['email'] ?? fail('--email ADDR is required');
$batch = $options['batch'] ?? null;
if (!$files) {
    fail('no FILE given');
}

$client = new GearmanClient();
$client->addServers(getenv('IMPORTER_GEARMAN_SERVERS') ?: '127.0.0.1:4730');

$jobs = [];
foreach ($files as $file) {
    $path = realpath($file) ?: fail("$file: no such file");
    if (isset($options['legacy'])) {  // the seed's job: unsigned, refused by the workers
        $jobId = null;
        $handle = $client->doBackground('import', $path . '||:||' . $email);
    } else {
        $jobId = 'php-' . bin2hex(random_bytes(12));
        $handle = $client->doBackground('import', job($jobId, $path, $email, $batch, count($files)), $jobId);
    }
    if ($client->returnCode() !== GEARMAN_SUCCESS) {
        fwrite(STDERR, "submit.php: gearmand refused $path: " . $client->error() . "\n");
        exit(3);
    }
    $jobs[] = ['file' => $path, 'job_id' => $jobId, 'handle' => $handle, 'progress' => []];
}

// Follow every job until gearmand no longer knows it (a finished background job is forgotten).
foreach ($jobs as $job) {
    while (true) {
        [$known, $running, $numerator, $denominator] = $client->jobStatus($job['handle']);
        if (!$known) {
            break;
        }
        $seen = [$numerator, $denominator];
        if ($running && $denominator > 0 && end($job['progress']) !== $seen) {
            $job['progress'][] = $seen;
        }
        usleep(POLL_MICROSECONDS);
    }
    echo json_encode($job, JSON_FLAGS), "\n";
}
