// A minimal chat page on the AI SDK's useChat, as a React app written against the SDK would be:
// DefaultChatTransport({api: '/api/chat'}) and resume: true, nothing streamchat-specific. It shows
// every part of every message: text, tool parts with their input and output (or error), and
// data-artifact parts (replaced in place by id as the artifact completes).
// tests/test_usechat.py bundles it with esbuild and opens it in Chromium.
import { useChat } from '@ai-sdk/react';
import { DefaultChatTransport } from 'ai';
import { useMemo, useState } from 'react';
import { createRoot } from 'react-dom/client';

// The chat id is the conversation id; from the address, so a reload asks for the same one.
const chatId = new URLSearchParams(location.search).get('chat') ?? 'usechat';

function ToolPart({ part }) {
  const name = part.type.slice('tool-'.length);
  let result = '…';
  if (part.state === 'output-available') result = String(part.output);
  if (part.state === 'output-error') result = `failed: ${part.errorText}`;
  return (
    <div className="tool" data-state={part.state}>
      <code>{name}({JSON.stringify(part.input ?? {})})</code> → <output>{result}</output>
    </div>
  );
}

function Part({ part }) {
  if (part.type === 'text') return <p className="text">{part.text}</p>;
  if (part.type.startsWith('tool-')) return <ToolPart part={part} />;
  if (part.type === 'data-artifact') {
    const { title, language, content, status } = part.data;
    return (
      <figure className="artifact" data-id={part.id} data-status={status}>
        <figcaption>{title}{language ? ` (${language})` : ''}</figcaption>
        <pre>{content}</pre>
      </figure>
    );
  }
  return null; // step-start and the parts a page like this has no use for
}

function App() {
  const transport = useMemo(() => new DefaultChatTransport({ api: '/api/chat' }), []);
  const { messages, sendMessage, status, stop, error } = useChat({ id: chatId, transport, resume: true });
  const [input, setInput] = useState('');
  const submit = (event) => {
    event.preventDefault();
    if (!input.trim()) return;
    sendMessage({ text: input });
    setInput('');
  };
  return (
    <main>
      <h1>useChat against streamchat</h1>
      <p id="status" data-status={status}>{status}</p>
      <ol id="messages">
        {messages.map((message) => (
          <li key={message.id} className={`message ${message.role}`}>
            {message.parts.map((part, n) => <Part key={n} part={part} />)}
          </li>
        ))}
      </ol>
      {error ? <p role="alert">{error.message}</p> : null}
      <form onSubmit={submit}>
        <input aria-label="Message" value={input} onChange={(e) => setInput(e.target.value)} />
        <button type="submit">Send</button>
        <button type="button" onClick={() => stop()}>Stop</button>
      </form>
    </main>
  );
}

createRoot(document.getElementById('root')).render(<App />);
