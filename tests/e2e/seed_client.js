async function streamChatResponse(prompt) {
  try {
    const response = await fetch('/api/v1/guest/chat', {
      method: 'POST',
      headers: { 'Content-Type': 'application/json' },
      body: JSON.stringify({ query: prompt }),
    });
    
    if (!response.ok) {
      throw new Error(`HTTP error ${response.status}`);
    }
    
    const reader = response.body.getReader();
    const decoder = new TextDecoder();
    let buffer = '';
    
    // Process the stream
    while (true) {
      const { done, value } = await reader.read();
      if (done) break;
      
      buffer += decoder.decode(value, { stream: true });
      
      // Process complete SSE messages in buffer
      while (buffer.includes('\n\n')) {
        const newlineIndex = buffer.indexOf('\n\n');
        const message = buffer.slice(0, newlineIndex).trim();
        buffer = buffer.slice(newlineIndex + 2);
        
        if (message && message.startsWith('data:')) {
          try {
            // Extract the JSON part
            const jsonStr = message.slice(5).trim();
            const data = JSON.parse(jsonStr);
            
            // Handle different event types
            switch(data.event) {
              case 'queued':
                updateUI(`Queued at position ${data.data.queue_position}...`);
                break;
              case 'processing':
                updateUI('Processing your request...');
                break;
              case 'answer_chunk':
                updateUI(data.data, true); // append=true
                break;
              case 'error':
                showError(data.data.error);
                break;
              case 'workflow_complete':
                showSuggestedQuestions(data.data.suggested_questions);
                break;
            }
          } catch (e) {
            console.error('Error parsing SSE message:', e);
          }
        }
      }
    }
  } catch (error) {
    console.error('Error with chat stream:', error);
    showError('Connection error occurred');
  }
}
