/* The UI's small helpers, and the behaviour of the pages: every change goes through /api/v1.
 *
 * window.connector (and window.api) is what other scripts (the flow builder) reuse:
 *   api(method, path, body)  -> parsed JSON (null for 204), or throws ApiError
 *                              {status, code, message, details: {field: [messages]}}
 *   showErrors(form, err), clearErrors(form), readForm(form), flash(message, kind),
 *   busy(button, promise)
 */
(function () {
  "use strict";

  function meta(name) {
    var el = document.querySelector('meta[name="' + name + '"]');
    return el ? el.getAttribute("content") : "";
  }

  function ApiError(status, code, message, details) {
    this.name = "ApiError";
    this.status = status;
    this.code = code;
    this.message = message;
    this.details = details || {};
  }
  ApiError.prototype = Object.create(Error.prototype);
  ApiError.prototype.constructor = ApiError;

  /** Call the JSON API with the session cookie and its CSRF token; see the header. */
  function api(method, path, body, options) {
    options = options || {};
    var headers = {"Accept": "application/json", "X-CSRF-Token": meta("csrf-token")};
    var init = {method: method, headers: headers, credentials: "same-origin"};
    if (body !== undefined && body !== null) {
      if (options.contentType) {
        headers["Content-Type"] = options.contentType;
        init.body = body;
      } else {
        headers["Content-Type"] = "application/json";
        init.body = JSON.stringify(body);
      }
    }
    return fetch(meta("api-root") + path, init).then(function (response) {
      if (response.status === 401) {
        window.location.assign(meta("login-url") + "?next=" +
          encodeURIComponent(window.location.pathname + window.location.search));
      }
      if (response.status === 204) {
        return null;
      }
      return response.text().then(function (text) {
        var data = null;
        try {
          data = text ? JSON.parse(text) : null;
        } catch (e) {
          data = null;
        }
        if (!response.ok) {
          var error = (data && data.error) || {};
          throw new ApiError(response.status, error.code || "HTTP_" + response.status,
            error.message || ("the server answered " + response.status), error.details);
        }
        return data;
      });
    }, function () {
      throw new ApiError(0, "NETWORK", "the connector did not answer; is it running?", {});
    });
  }

  function inDisabledFieldset(el) {
    var fs = el.closest("fieldset");
    return fs !== null && fs.disabled;
  }

  function errorSlot(form, path) {
    var slots = form.querySelectorAll("[data-error-for]");
    for (var i = 0; i < slots.length; i++) {
      if (slots[i].getAttribute("data-error-for") === path && !inDisabledFieldset(slots[i])) {
        return slots[i];
      }
    }
    return null;
  }

  function clearErrors(form) {
    form.querySelectorAll("[data-error-for]").forEach(function (el) { el.textContent = ""; });
    form.querySelectorAll("[aria-invalid]").forEach(function (el) {
      el.removeAttribute("aria-invalid");
    });
    form.querySelectorAll(".form-error").forEach(function (el) { el.textContent = ""; });
  }

  /** Put each of err.details' messages beside its field; the rest in .form-error. */
  function showErrors(form, err) {
    clearErrors(form);
    var rest = [];
    var details = (err && err.details) || {};
    var placed = false;
    Object.keys(details).forEach(function (path) {
      var messages = [].concat(details[path]).join(" ");
      var slot = errorSlot(form, path);
      if (slot) {
        slot.textContent = messages;
        placed = true;
        var input = slot.id && form.querySelector('[aria-describedby~="' + slot.id + '"]');
        if (input) {
          input.setAttribute("aria-invalid", "true");
        }
      } else if (path === "_body") {
        rest.push(messages);
      } else {
        rest.push(path + ": " + messages);
      }
    });
    if (!placed && rest.length === 0) {
      rest.push(err && err.message ? err.message : String(err));
    }
    var box = form.querySelector(".form-error");
    if (box) {
      box.textContent = rest.join(" ");
    } else if (rest.length) {
      flash(rest.join(" "), "error", true);
    }
    var first = form.querySelector('[aria-invalid="true"]');
    if (first) {
      first.focus();
    }
  }

  function setPath(target, path, value) {
    var parts = path.split(".");
    var node = target;
    for (var i = 0; i < parts.length - 1; i++) {
      if (typeof node[parts[i]] !== "object" || node[parts[i]] === null) {
        node[parts[i]] = {};
      }
      node = node[parts[i]];
    }
    node[parts[parts.length - 1]] = value;
  }

  /** Return the form's enabled inputs as an object; dotted names nest; empty ones are left out. */
  function readForm(form) {
    var out = {};
    Array.prototype.forEach.call(form.elements, function (el) {
      if (!el.name || el.disabled || el.type === "submit" || el.type === "button") {
        return;
      }
      var value;
      if (el.type === "checkbox") {
        value = el.checked;
      } else {
        value = el.value.trim();
        if (value === "") {
          return;
        }
        if (el.getAttribute("data-type") === "number" || el.type === "number") {
          value = Number(value);
        }
      }
      setPath(out, el.name, value);
    });
    return out;
  }

  function flash(message, kind, now) {
    if (!now) {
      try {
        window.sessionStorage.setItem("connector.flash", JSON.stringify([message, kind || "ok"]));
        return;
      } catch (e) { /* private mode: show it now */ }
    }
    var box = document.getElementById("flash");
    if (!box) {
      return;
    }
    box.textContent = message;
    box.className = "flash " + (kind || "ok");
    box.hidden = false;
  }

  function showStoredFlash() {
    var stored = null;
    try {
      stored = window.sessionStorage.getItem("connector.flash");
      window.sessionStorage.removeItem("connector.flash");
    } catch (e) { /* nothing stored */ }
    if (stored) {
      var data = JSON.parse(stored);
      flash(data[0], data[1], true);
    }
  }

  function busy(button, promise) {
    if (button) {
      button.disabled = true;
      button.setAttribute("aria-busy", "true");
    }
    function done() {
      if (button) {
        button.disabled = false;
        button.removeAttribute("aria-busy");
      }
    }
    return promise.then(function (value) { done(); return value; },
                        function (err) { done(); throw err; });
  }

  function reload() {
    window.location.reload();
  }

  window.connector = {api: api, ApiError: ApiError, showErrors: showErrors,
                      clearErrors: clearErrors, readForm: readForm, flash: flash, busy: busy};
  window.api = api;

  // -- behaviour shared by the pages -------------------------------------------------------

  /* <button data-call="POST" data-path="/flows/x/resume" data-confirm="..." data-done="..."> */
  function onCall(button) {
    var question = button.getAttribute("data-confirm");
    if (question && !window.confirm(question)) {
      return;
    }
    busy(button, api(button.getAttribute("data-call"), button.getAttribute("data-path")))
      .then(function (answer) {
        var done = button.getAttribute("data-done") || "Done.";
        if (answer && typeof answer.count === "number") {
          done = done.replace("{count}", answer.count);
        }
        flash(done, "ok");
        reload();
      }, function (err) {
        flash(err.message, "error", true);
      });
  }

  /* The on/off switch of a flow row. */
  function onToggle(input) {
    var name = input.getAttribute("data-toggle-flow");
    var on = input.checked;
    input.disabled = true;
    api("POST", "/flows/" + encodeURIComponent(name) + (on ? "/enable" : "/disable"))
      .then(function (answer) {
        var notes = (answer.warnings || []).slice();
        Object.keys(answer.setup || {}).forEach(function (key) {
          notes.push("Paste into the sender: " + key + " = " + answer.setup[key]);
        });
        flash("Flow " + name + " switched " + (on ? "on" : "off") + "." +
              (notes.length ? " " + notes.join(" ") : ""), notes.length ? "warn" : "ok");
        reload();
      }, function (err) {
        input.checked = !on;
        input.disabled = false;
        flash("Could not switch " + name + " " + (on ? "on" : "off") + ": " + err.message,
              "error", true);
      });
  }

  function onTestConnection(button) {
    var name = button.getAttribute("data-test-connection");
    var out = document.querySelector('[data-test-result="' + CSS.escape(name) + '"]');
    out.className = "test-result small";
    out.textContent = "Testing…";
    busy(button, api("POST", "/connections/" + encodeURIComponent(name) + "/test"))
      .then(function (answer) {
        if (answer.ok) {
          out.textContent = "Connection works.";
          out.classList.add("ok");
        } else {
          var e = answer.error || {};
          var where = [e.status, e.code].filter(Boolean).join(" ");
          out.textContent = "Failed" + (where ? " (" + where + ")" : "") + ": " + e.message;
          out.classList.add("error");
        }
      }, function (err) {
        out.textContent = "Failed: " + err.message;
        out.classList.add("error");
      });
  }

  function onReplaceToggle(button) {
    var row = document.getElementById(button.getAttribute("aria-controls"));
    var open = button.getAttribute("aria-expanded") !== "true";
    row.hidden = !open;
    button.setAttribute("aria-expanded", open ? "true" : "false");
    if (open) {
      var first = row.querySelector("input, select");
      if (first) {
        first.focus();
      }
    }
  }

  document.addEventListener("click", function (event) {
    var target = event.target.closest("[data-call], [data-test-connection], [data-replace-connection]");
    if (!target) {
      return;
    }
    event.preventDefault();
    if (target.hasAttribute("data-call")) {
      onCall(target);
    } else if (target.hasAttribute("data-test-connection")) {
      onTestConnection(target);
    } else {
      onReplaceToggle(target);
    }
  });

  document.addEventListener("change", function (event) {
    var el = event.target;
    if (el.hasAttribute("data-toggle-flow")) {
      onToggle(el);
    } else if (el.hasAttribute("data-autosubmit")) {
      el.form.submit();
    } else if (el.id === "f-app" && el.form && el.form.id === "add-connection") {
      chooseApp(el.form, el.value);
    }
  });

  // -- forms ---------------------------------------------------------------------------------

  function chooseApp(form, key) {
    form.querySelectorAll("fieldset.credentials").forEach(function (fs) {
      var on = fs.getAttribute("data-app") === key;
      fs.hidden = !on;
      fs.disabled = !on;
    });
  }

  var handlers = {
    "add-connection": function (form) {
      var data = readForm(form);
      data.credentials = data.credentials || {};
      if (data.base_url === undefined) {
        data.base_url = null;
      }
      return api("POST", "/connections", data).then(function () {
        flash("Connection " + data.name + " added. Test it to check the key.", "ok");
        reload();
      });
    },
    "replace-connection": function (form) {
      var name = form.getAttribute("data-connection");
      var data = readForm(form);
      data.credentials = data.credentials || {};
      if (data.base_url === undefined) {
        data.base_url = null;
      }
      return api("PUT", "/connections/" + encodeURIComponent(name), data).then(function () {
        flash("Credentials of " + name + " replaced.", "ok");
        reload();
      });
    },
    "flow-settings": function (form) {
      // PATCH only these settings: the steps someone else is editing are never resent.
      var name = form.getAttribute("data-flow");
      var wanted = readForm(form).on_failure || {};
      var settings = {on_failure: {
        pause_after: wanted.pause_after === undefined ? 0 : wanted.pause_after,
        error_flow: wanted.error_flow || null
      }};
      return api("PATCH", "/flows/" + encodeURIComponent(name), settings).then(function () {
        flash("Settings of " + name + " saved.", "ok");
        reload();
      });
    },
    "replay-item": function (form) {
      var runId = form.getAttribute("data-run");
      var text = form.elements.namedItem("item").value;
      var item;
      try {
        item = JSON.parse(text);
      } catch (e) {
        return Promise.reject(new ApiError(0, "INVALID_JSON", "invalid JSON",
          {item: ["Not valid JSON: " + e.message]}));
      }
      if (item === null || typeof item !== "object" || Array.isArray(item)) {
        return Promise.reject(new ApiError(0, "INVALID_JSON", "invalid item",
          {item: ["Expected a JSON object ({...}), the trigger item's fields."]}));
      }
      return api("POST", "/runs/" + runId + "/replay", {item: item}).then(function (run) {
        flash("Replayed as run #" + run.id + " with the edited item.", "ok");
        window.location.assign(window.location.pathname.replace(/\/\d+$/, "/" + run.id));
      });
    }
  };

  document.addEventListener("submit", function (event) {
    var form = event.target;
    var handler = handlers[form.id] || handlers[form.className];
    if (!handler) {
      return;  // an ordinary form (sign in, sign out, filters)
    }
    event.preventDefault();
    clearErrors(form);
    var button = form.querySelector('button[type="submit"]');
    busy(button, Promise.resolve().then(function () { return handler(form); }))
      .catch(function (err) { showErrors(form, err); });
  });

  // -- on load ---------------------------------------------------------------------------------

  function initTabs() {
    var tabs = document.querySelectorAll('[role="tab"]');
    tabs.forEach(function (tab) {
      tab.addEventListener("click", function (event) {
        event.preventDefault();
        tabs.forEach(function (other) {
          var on = other === tab;
          other.setAttribute("aria-selected", on ? "true" : "false");
          document.getElementById(other.getAttribute("aria-controls")).hidden = !on;
        });
        var first = document.getElementById(tab.getAttribute("aria-controls"))
          .querySelector("input:not([type=hidden])");
        if (first) {
          first.focus();
        }
      });
    });
  }

  function initRefresh() {
    var seconds = Number(document.body.getAttribute("data-refresh"));
    if (!seconds) {
      return;
    }
    window.setTimeout(function () {
      // do not throw away what someone is typing
      var active = document.activeElement;
      if (active && /^(INPUT|TEXTAREA|SELECT)$/.test(active.tagName)) {
        initRefresh();
        return;
      }
      reload();
    }, seconds * 1000);
  }

  document.addEventListener("DOMContentLoaded", function () {
    showStoredFlash();
    initTabs();
    initRefresh();
    var select = document.getElementById("f-app");
    if (select && select.form && select.form.id === "add-connection" && select.value) {
      chooseApp(select.form, select.value);
    }
  });
}());
