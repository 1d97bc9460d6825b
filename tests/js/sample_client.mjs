// The JavaScript client from the original OpenRouter.NET Streaming Web API Sample's README,
// unchanged but for the absolute URL (node has no page origin) and a collector that prints
// what it saw as JSON, so the test can check it.
const base = process.argv[2];
const message = process.argv[3];
const seen = { text: "", toolResults: [], artifacts: [], types: [] };
const console_ = { log: (label, ...rest) => {
  if (label === 'Text:') seen.text += rest[0];
  if (label === 'Tool result:') seen.toolResults.push(rest[0]);
  if (label === 'Artifact:') seen.artifacts.push({ title: rest[0], content: rest[1] });
} };

{
  const console = console_;
  const response = await fetch(base + '/api/stream', {
    method: 'POST',
    headers: { 'Content-Type': 'application/json' },
    body: JSON.stringify({
      message: message,
      conversationId: 'my-conversation'
    })
  });

  const reader = response.body.getReader();
  const decoder = new TextDecoder();

  while (true) {
    const { done, value } = await reader.read();
    if (done) break;

    const chunk = decoder.decode(value);
    const lines = chunk.split('\n').filter(line => line.startsWith('data: '));

    for (const line of lines) {
      const json = line.substring(6);
      const event = JSON.parse(json);
      seen.types.push(event.type);

      switch (event.type) {
        case 'text':
          console.log('Text:', event.content);
          break;
        case 'tool_completed':
          console.log('Tool result:', event.result);
          break;
        case 'artifact_completed':
          console.log('Artifact:', event.title, event.content);
          break;
      }
    }
  }
}
process.stdout.write(JSON.stringify(seen));
