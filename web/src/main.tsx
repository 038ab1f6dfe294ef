import { StrictMode } from 'react';
import { createRoot } from 'react-dom/client';
import { App } from './dashboard/App';
import { takeTokenFromFragment } from './dashboard/token';
import './dashboard/styles.css';

// Before anything renders: the token leaves the address bar at once.
const token = takeTokenFromFragment(window.location, window.history);

const root = document.getElementById('root');
if (!root) throw new Error('index.html has no #root');
createRoot(root).render(
  <StrictMode>
    <App initialToken={token} />
  </StrictMode>,
);
