/*
 * The chat page: conversation list, live messages, typing, read receipts, presence and reconnects.
 * Uses the page's one /chat connection from portal.js (window.Portal). Message bodies are plain text
 * and reach the page through textContent only. Ordering is by the server's per-conversation seq:
 * a gap (a seq past the next expected one) or a reconnect triggers a `history` catch-up from the last
 * contiguous seq seen, and messages already shown are never shown twice.
 */
(function () {
  "use strict";

  var root = document.querySelector("[data-chat]");
  if (!root || !window.Portal) {
    return;
  }

  var Portal = window.Portal;
  var socket = Portal.socket;
  var me = Portal.userId;
  var MAX_BYTES = parseInt(root.getAttribute("data-max-bytes") || "4096", 10);
  var PAGE = parseInt(root.getAttribute("data-page-size") || "50", 10);
  var TYPING_EVERY_MS = 3000;
  var TYPING_SHOWN_MS = 4000;

  var list = root.querySelector("[data-conversation-list]");
  var title = root.querySelector("[data-conversation-title]");
  var connection = root.querySelector("[data-connection]");
  var messagesEl = root.querySelector("[data-messages]");
  var typingEl = root.querySelector("[data-typing]");
  var errorEl = root.querySelector("[data-chat-error]");
  var presenceEl = root.querySelector("[data-presence]");
  var form = root.querySelector("[data-composer]");
  var textarea = form.querySelector("textarea");
  var sendButton = form.querySelector("button[type=submit]");

  // State of the open conversation; reset by open().
  var current = null;      // conversation id
  var joined = false;
  var lastSeq = 0;         // highest seq up to which every message is shown
  var shown = {};          // seq -> <li>
  var pending = {};        // idempotency key -> <li> not yet acknowledged
  var members = {};        // user id -> {name, state}
  var reads = {};          // user id -> last read seq
  var catchingUp = false;
  var catchUpAgain = false;
  var lastTypingSent = 0;
  var typingTimers = {};
  var readTimer = null;
  var myState = document.visibilityState === "hidden" ? "away" : "online";

  /* --- small helpers ------------------------------------------------------------------------------ */

  function newKey() {
    if (window.crypto && typeof window.crypto.randomUUID === "function") {
      return window.crypto.randomUUID();
    }
    var bytes = new Uint8Array(16);
    window.crypto.getRandomValues(bytes);
    return Array.prototype.map.call(bytes, function (b) { return ("0" + b.toString(16)).slice(-2); }).join("");
  }

  function utf8Length(text) {
    return new TextEncoder().encode(text).length;
  }

  function showError(message) {
    errorEl.textContent = message || "";
  }

  function setConnection(state, text) {
    connection.setAttribute("data-state", state);
    connection.textContent = text;
  }

  function setComposerEnabled(enabled) {
    textarea.disabled = !enabled;
    sendButton.disabled = !enabled;
  }

  function isValidMessage(m) {
    return m && typeof m === "object" && typeof m.seq === "number" && typeof m.body === "string" &&
      m.sender && typeof m.sender.id === "string";
  }

  /* --- rendering ------------------------------------------------------------------------------------ */

  function metaText(message) {
    var parts = [message.sender.id === me ? "You" : message.sender.name, Portal.formatTime(message.sent_at)];
    if (message.sender.id === me && readByOthers() >= message.seq) {
      parts.push("Read");
    }
    return parts.join(" · ");
  }

  function buildItem(message, isPending) {
    var item = document.createElement("li");
    item.className = "message" + (message.sender.id === me ? " mine" : "");
    var text = document.createElement("span");
    text.className = "body";
    text.textContent = message.body;
    var meta = document.createElement("span");
    meta.className = "meta";
    meta.textContent = isPending ? "Sending…" : metaText(message);
    item.appendChild(text);
    item.appendChild(meta);
    if (!isPending) {
      item.setAttribute("data-seq", String(message.seq));
      item.setAttribute("data-id", message.id);
      item.portalMessage = message;
    }
    return item;
  }

  function firstPendingItem() {
    return messagesEl.querySelector("li[data-pending]");
  }

  // Put a server message in seq order; ignore one already shown; advance the contiguous lastSeq.
  function insertMessage(message) {
    if (message.conversation_id !== current || shown[message.seq]) {
      return false;
    }
    var waiting = pending[message.idempotency_key];
    if (message.sender.id === me && waiting) {
      waiting.remove();
      delete pending[message.idempotency_key];
    }
    var item = buildItem(message, false);
    var before = null;
    var seqs = Object.keys(shown).map(Number).filter(function (s) { return s > message.seq; });
    if (seqs.length) {
      before = shown[Math.min.apply(null, seqs)];
    } else {
      before = firstPendingItem();
    }
    messagesEl.insertBefore(item, before);
    shown[message.seq] = item;
    while (shown[lastSeq + 1]) {
      lastSeq += 1;
    }
    if (message.seq > lastSeq) {
      catchUp();  // a gap: fetch what is missing
    }
    return true;
  }

  function scrollToEnd() {
    messagesEl.scrollTop = messagesEl.scrollHeight;
  }

  function readByOthers() {
    var highest = 0;
    Object.keys(reads).forEach(function (userId) {
      if (userId !== me && reads[userId] > highest) {
        highest = reads[userId];
      }
    });
    return highest;
  }

  function refreshReceipts() {
    Object.keys(shown).forEach(function (seq) {
      var item = shown[seq];
      if (item.portalMessage && item.portalMessage.sender.id === me) {
        item.querySelector(".meta").textContent = metaText(item.portalMessage);
      }
    });
  }

  function renderPresence() {
    presenceEl.textContent = "";
    Object.keys(members).forEach(function (userId) {
      if (userId === me) {
        return;
      }
      var person = members[userId];
      var entry = document.createElement("span");
      var dot = document.createElement("span");
      dot.className = "presence-dot" + (person.state === "online" ? " online" : "");
      dot.setAttribute("aria-hidden", "true");
      entry.appendChild(dot);
      entry.appendChild(document.createTextNode(person.name + " (" + (person.state || "offline") + ") "));
      presenceEl.appendChild(entry);
    });
  }

  function setBadge(conversationId, count) {
    if (!list) {
      return;
    }
    var button = list.querySelector('button[data-conversation-id="' + conversationId + '"]');
    var badge = button && button.querySelector("[data-unread]");
    if (badge) {
      badge.textContent = String(count);
      badge.setAttribute("aria-label", count + " unread");
      badge.hidden = !(count > 0);
    }
  }

  /* --- server calls ------------------------------------------------------------------------------------ */

  function markRead() {
    if (!current || !joined || document.visibilityState === "hidden" || lastSeq === 0) {
      return;
    }
    window.clearTimeout(readTimer);
    readTimer = window.setTimeout(function () {
      var conversationId = current;
      Portal.call("read", { conversation_id: conversationId, seq: lastSeq }, function (answer) {
        if (answer.ok && conversationId === current) {
          reads[me] = answer.seq;
        }
      });
    }, 400);
  }

  function catchUp() {
    if (!current || !joined) {
      return;
    }
    if (catchingUp) {
      catchUpAgain = true;
      return;
    }
    catchingUp = true;
    var conversationId = current;
    Portal.call("history", { conversation_id: conversationId, after_seq: lastSeq, limit: PAGE }, function (answer) {
      catchingUp = false;
      if (conversationId !== current) {
        return;
      }
      if (!answer.ok) {
        showError(answer.error.message);
        return;
      }
      var atEnd = messagesEl.scrollHeight - messagesEl.scrollTop - messagesEl.clientHeight < 40;
      answer.messages.filter(isValidMessage).forEach(insertMessage);
      if (atEnd) {
        scrollToEnd();
      }
      if (answer.has_more || catchUpAgain) {
        catchUpAgain = false;
        catchUp();
      } else {
        markRead();
      }
    });
  }

  function join(conversationId, firstTime) {
    Portal.call("join", { conversation_id: conversationId }, function (answer) {
      if (conversationId !== current) {
        return;
      }
      if (!answer.ok) {
        joined = false;
        setComposerEnabled(false);
        showError(answer.error.message);
        return;
      }
      joined = true;
      showError("");
      setComposerEnabled(true);
      members = {};
      (answer.members || []).forEach(function (person) {
        members[person.id] = { name: person.name, state: (answer.presence || {})[person.id] || "offline" };
      });
      reads = answer.reads || {};
      renderPresence();
      if (myState === "away") {
        Portal.call("presence", { conversation_id: conversationId, state: "away" }, function () {});
      }
      if (firstTime) {
        lastSeq = Math.max(0, answer.last_seq - PAGE);  // show the latest page; older ones are not loaded
      }
      catchUp();
    });
  }

  function open(conversationId, label) {
    if (current && current !== conversationId && joined) {
      Portal.call("leave", { conversation_id: current }, function () {});
    }
    current = conversationId;
    joined = false;
    lastSeq = 0;
    shown = {};
    pending = {};
    members = {};
    reads = {};
    catchUpAgain = false;
    messagesEl.textContent = "";
    typingEl.textContent = "";
    presenceEl.textContent = "";
    showError("");
    title.textContent = label;
    messagesEl.setAttribute("aria-label", "Messages in " + label);
    setComposerEnabled(false);
    if (list) {
      Array.prototype.forEach.call(list.querySelectorAll("button[data-conversation-id]"), function (button) {
        button.setAttribute("aria-current", button.getAttribute("data-conversation-id") === conversationId ? "true" : "false");
      });
    }
    var url = new URL(window.location.href);
    url.searchParams.set("c", conversationId);
    window.history.replaceState(null, "", url.toString());
    if (socket.connected) {
      join(conversationId, true);
    }
  }

  function send(body, key, item) {
    var conversationId = current;
    Portal.call("send", { conversation_id: conversationId, body: body, idempotency_key: key }, function (answer) {
      if (conversationId !== current) {
        return;
      }
      if (answer.ok) {
        insertMessage(answer.message);  // replaces the pending item, unless the broadcast already did
        scrollToEnd();
        return;
      }
      var meta = item.querySelector(".meta");
      meta.textContent = "Not sent: " + answer.error.message + " ";
      var retry = document.createElement("button");
      retry.type = "button";
      retry.className = "button subtle";
      retry.textContent = "Retry";
      retry.addEventListener("click", function () {
        meta.textContent = "Sending…";
        send(body, key, item);  // the same key: the server stores it at most once
      });
      meta.appendChild(retry);
    }, 15000);
  }

  /* --- user actions -------------------------------------------------------------------------------------- */

  if (list) {
    list.addEventListener("click", function (event) {
      var button = event.target.closest("button[data-conversation-id]");
      if (button) {
        open(button.getAttribute("data-conversation-id"), button.querySelector("[data-title]").textContent);
      }
    });
  }

  form.addEventListener("submit", function (event) {
    event.preventDefault();
    var body = textarea.value;
    if (!current || !joined) {
      return;
    }
    if (!body.trim()) {
      showError("Write a message first.");
      return;
    }
    if (utf8Length(body) > MAX_BYTES) {
      showError("That message is too long (at most " + MAX_BYTES + " bytes).");
      return;
    }
    showError("");
    var key = newKey();
    var item = buildItem({ body: body, sender: { id: me, name: "You" } }, true);
    item.setAttribute("data-pending", key);
    messagesEl.appendChild(item);
    pending[key] = item;
    scrollToEnd();
    textarea.value = "";
    send(body, key, item);
  });

  textarea.addEventListener("keydown", function (event) {
    if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
      event.preventDefault();
      form.requestSubmit();
    }
  });

  textarea.addEventListener("input", function () {
    var now = Date.now();
    if (current && joined && textarea.value && now - lastTypingSent > TYPING_EVERY_MS) {
      lastTypingSent = now;
      Portal.touch();
      socket.emit("typing", { conversation_id: current });
    }
  });

  document.addEventListener("visibilitychange", function () {
    myState = document.visibilityState === "hidden" ? "away" : "online";
    if (current && joined) {
      Portal.call("presence", { conversation_id: current, state: myState }, function () {});
      if (myState === "online") {
        markRead();
      }
    }
  });

  document.addEventListener("portal:unread", function (event) {
    var counts = event.detail.conversations;
    Object.keys(counts).forEach(function (conversationId) {
      setBadge(conversationId, conversationId === current && joined ? 0 : counts[conversationId]);
    });
  });

  /* --- server events -------------------------------------------------------------------------------------- */

  socket.on("message", function (message) {
    if (!isValidMessage(message) || message.conversation_id !== current) {
      return;
    }
    var atEnd = messagesEl.scrollHeight - messagesEl.scrollTop - messagesEl.clientHeight < 40;
    if (insertMessage(message) && (atEnd || message.sender.id === me)) {
      scrollToEnd();
    }
    if (message.sender.id !== me) {
      typingEl.textContent = "";
      markRead();
    }
  });

  socket.on("typing", function (data) {
    if (!data || data.conversation_id !== current || !data.user || data.user.id === me) {
      return;
    }
    typingEl.textContent = data.user.name + " is typing…";
    window.clearTimeout(typingTimers[data.user.id]);
    typingTimers[data.user.id] = window.setTimeout(function () {
      typingEl.textContent = "";
    }, TYPING_SHOWN_MS);
  });

  socket.on("read", function (data) {
    if (!data || data.conversation_id !== current || !data.user || typeof data.seq !== "number") {
      return;
    }
    reads[data.user.id] = Math.max(reads[data.user.id] || 0, data.seq);
    refreshReceipts();
  });

  socket.on("presence", function (data) {
    if (!data || data.conversation_id !== current || !data.user || !joined) {
      return;
    }
    if (data.user.id === me) {
      // Another tab of mine (maybe on another worker) left: say I am still here.
      if (data.state === "offline") {
        Portal.call("presence", { conversation_id: current, state: myState }, function () {});
      }
      return;
    }
    members[data.user.id] = { name: data.user.name, state: data.state };
    renderPresence();
    if (data.announce) {
      // Someone joined, possibly on another worker: tell them we are here.
      Portal.call("presence", { conversation_id: current, state: myState }, function () {});
    }
  });

  socket.on("error", function (error) {
    if (!error || typeof error.message !== "string") {
      return;
    }
    if (!error.conversation_id || error.conversation_id === current) {
      showError(error.message);
    }
    if (error.code === "forbidden" && error.conversation_id === current) {
      joined = false;
      setComposerEnabled(false);
    }
  });

  /* --- connection state ------------------------------------------------------------------------------------ */

  socket.on("connect", function () {
    setConnection("connected", "Connected");
    if (current) {
      join(current, !joined && lastSeq === 0);  // after a reconnect: rejoin, then catch up from lastSeq
    }
  });

  socket.on("disconnect", function (reason) {
    joined = false;
    setComposerEnabled(false);
    if (reason === "io client disconnect") {
      setConnection("offline", "Offline");
    } else {
      setConnection("reconnecting", "Reconnecting…");
    }
  });

  socket.io.on("reconnect_attempt", function () {
    setConnection("reconnecting", "Reconnecting…");
  });

  socket.on("server_shutdown", function () {
    setConnection("reconnecting", "Reconnecting…");
  });

  socket.on("connect_error", function () {
    setConnection("reconnecting", "Reconnecting…");
  });

  if (socket.connected) {
    setConnection("connected", "Connected");
  }

  var selected = root.getAttribute("data-selected");
  var firstButton = list && (selected ? list.querySelector('button[data-conversation-id="' + selected + '"]')
    : list.querySelector("button[data-conversation-id]"));
  if (firstButton) {
    open(firstButton.getAttribute("data-conversation-id"), firstButton.querySelector("[data-title]").textContent);
  }
})();
