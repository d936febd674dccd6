// An action reads its input, a JSON object, on stdin and writes its output,
// one JSON object, on stdout. stderr is its log.
let raw = '';
process.stdin.setEncoding('utf8');
process.stdin.on('data', (chunk) => { raw += chunk; });
process.stdin.on('end', () => {
  const data = JSON.parse(raw);
  const greeting = data.greeting ?? 'Hello';
  console.error(`greeting ${data.name}`);
  process.stdout.write(JSON.stringify({ sentence: `${greeting}, ${data.name}!` }));
});
