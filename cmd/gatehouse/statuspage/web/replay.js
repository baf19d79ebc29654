// Starts asciinema-player on the replay page. The cast URL comes from the
// element's data-cast attribute so that the page needs no inline script.
(function () {
  "use strict";
  var el = document.getElementById("player");
  if (!el || !window.AsciinemaPlayer) {
    return;
  }
  window.AsciinemaPlayer.create(el.getAttribute("data-cast"), el, {
    autoPlay: true,
    idleTimeLimit: 2,
    fit: "width",
    terminalFontFamily: "monospace"
  });
})();
